"""Open-set rejection: prototypes, calibration, verdicts, AUROC; and attaching it to an artifact."""

import json
import math

import numpy as np
import pytest

from core import errors
from core.artifact import load_artifact, sha256_file
from core.openset import OpenSet, auroc, calibrate, class_prototypes, fit_cosine_logit


def unit(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)], dtype=np.float32)


def test_prototypes_are_normalised_class_means():
    x = np.stack([unit(0.0), unit(0.2), unit(math.pi / 2)])
    protos = class_prototypes(x, np.array([0, 0, 1]), 2)
    np.testing.assert_allclose(protos[0], unit(0.1), atol=1e-6)
    np.testing.assert_allclose(protos[1], unit(math.pi / 2), atol=1e-6)


def test_calibration_rejects_the_stated_fraction():
    rng = np.random.default_rng(0)
    angles = rng.uniform(0, 0.5, 1000)
    x = np.stack([unit(a) for a in angles])
    threshold = calibrate(np.stack([unit(0.0)]), x, frr=0.1)
    assert threshold == pytest.approx(np.quantile(angles, 0.9), abs=1e-3)
    assert (angles > threshold).mean() == pytest.approx(0.1, abs=0.01)


def test_nearest_and_auroc():
    open_set = OpenSet(np.stack([unit(0.0), unit(math.pi / 2)]), ("a", "b"), 0.3, 0.05, "test", (5.0, -1.0))
    index, angle = open_set.nearest(unit(0.1))
    assert index == 0 and angle == pytest.approx(0.1, abs=1e-5)
    again = OpenSet.from_dict(json.loads(json.dumps(open_set.to_dict())))
    assert (again.threshold_rad, again.cosine_logit) == (0.3, (5.0, -1.0))
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0 and auroc([0.3], [0.1]) == 0.0 and auroc([0.2], [0.2]) == 0.5


def test_attach_open_set_to_an_artifact(tmp_path):
    from export.onnx_export import export_artifact
    from export.open_set import attach_open_set
    from tests.helpers import make_run, write_esc50

    data = write_esc50(tmp_path / "esc")
    run = make_run(tmp_path / "run", labels=("low", "mid", "high"), labeled=str(data))
    artifact_dir = export_artifact(run, tmp_path / "model")
    open_set = attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration_folds=(3,), frr=0.2,
                               prototype_weight=0.5, temperature=0.4, vote="amplitude", enrol_gate="clip")
    art = load_artifact(artifact_dir)
    assert art.open_set is not None and art.open_set.labels == ("low", "mid", "high")
    assert (art.open_set.prototype_weight, art.open_set.temperature, art.open_set.vote, art.open_set.enrol_gate) == \
        (0.5, 0.4, "amplitude", "clip")
    assert art.manifest["openset"]["calibrated_on"] == "folds [3]" and 0 < open_set.threshold_rad < math.pi
    from dataclasses import replace

    from export.open_set import save_open_set

    for other in (replace(open_set, labels=open_set.labels[::-1]), replace(open_set, prototypes=open_set.prototypes[:2])):
        with pytest.raises(errors.ArtifactError, match="in its order"):
            save_open_set(artifact_dir, other)  # refused before anything is written
    assert load_artifact(artifact_dir).open_set.labels == ("low", "mid", "high")  # untouched
    manifest = json.loads((artifact_dir / "manifest.json").read_text())
    (artifact_dir / "openset.json").write_text(json.dumps({**open_set.to_dict(), "labels": ["high", "mid", "low"]}))
    manifest["openset"]["sha256"] = sha256_file(artifact_dir / "openset.json")  # hashed, but in another order
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(errors.ArtifactError, match="in its order"):
        load_artifact(artifact_dir)
    (artifact_dir / "openset.json").write_text(json.dumps({"labels": ["low"]}))  # not an open set at all
    manifest["openset"]["sha256"] = sha256_file(artifact_dir / "openset.json")
    (artifact_dir / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(errors.ArtifactError, match="not an open set"):
        load_artifact(artifact_dir)
    with open(artifact_dir / "openset.json", "a") as f:
        f.write(" ")
    with pytest.raises(errors.ArtifactError, match="sha256"):
        load_artifact(artifact_dir)


def test_cosine_logit_line():
    cos = np.random.default_rng(1).uniform(-1, 1, (50, 4))
    assert fit_cosine_logit(3.0 * cos - 1.0, cos) == (pytest.approx(3.0), pytest.approx(-1.0))


def test_the_prototype_weight_is_stored_and_defaults_to_the_head():
    open_set = OpenSet(np.stack([unit(0.0)]), ("a",), 0.3, 0.05, "test", (5.0, -1.0), 0.02, 0.75)
    assert OpenSet.from_dict(json.loads(json.dumps(open_set.to_dict()))).prototype_weight == 0.75
    older = {k: v for k, v in open_set.to_dict().items() if k != "prototype_weight"}
    assert OpenSet.from_dict(older).prototype_weight == 0.0


def test_the_temperature_is_stored_and_defaults_to_one():
    open_set = OpenSet(np.stack([unit(0.0)]), ("a",), 0.3, 0.05, "test", (5.0, -1.0), 0.02, 0.75, 0.4)
    assert OpenSet.from_dict(json.loads(json.dumps(open_set.to_dict()))).temperature == 0.4
    older = {k: v for k, v in open_set.to_dict().items() if k != "temperature"}
    assert OpenSet.from_dict(older).temperature == 1.0


def test_a_threshold_per_class_or_the_one():
    two = (np.stack([unit(0.0), unit(math.pi / 2)]), ("a", "b"), 0.3, 0.05, "test")
    assert [OpenSet(*two).threshold_of(i) for i in (0, 1)] == [0.3, 0.3]
    per_class = OpenSet(*two, class_thresholds_rad=(0.2, 0.4))
    assert [per_class.threshold_of(i) for i in (0, 1)] == [0.2, 0.4]
    again = OpenSet.from_dict(json.loads(json.dumps(per_class.to_dict())))
    assert again.class_thresholds_rad == (0.2, 0.4) and "class_thresholds_rad" not in OpenSet(*two).to_dict()


def test_attach_open_set_takes_the_thresholds_per_class_of_its_calibration(tmp_path):
    from export.onnx_export import export_artifact
    from export.open_set import attach_open_set
    from tests.helpers import make_run, write_esc50

    data = write_esc50(tmp_path / "esc")
    run = make_run(tmp_path / "run", labels=("low", "mid", "high"), labeled=str(data))
    artifact_dir = export_artifact(run, tmp_path / "model")
    calibration = tmp_path / "openset_cv.json"
    per_class = {"high": 0.5, "low": 0.3, "mid": 0.4}  # by label, in any order
    calibration.write_text(json.dumps({"threshold_rad": 0.45, "frr": 0.02, "calibrated_on": "cv",
                                       "class_thresholds_rad": per_class}))
    open_set = attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration=str(calibration))
    assert open_set.class_thresholds_rad == (0.3, 0.4, 0.5) and open_set.threshold_rad == 0.45
    assert load_artifact(artifact_dir).manifest["openset"]["class_thresholds_rad"] == {"low": 0.3, "mid": 0.4, "high": 0.5}
    for wrong in ({"low": 0.3, "mid": 0.4}, {**per_class, "high": 26.1}, [0.3, 0.4, 0.5]):  # a class missing, degrees
        calibration.write_text(json.dumps({"threshold_rad": 0.45, "frr": 0.02, "calibrated_on": "cv",
                                           "class_thresholds_rad": wrong}))
        with pytest.raises(errors.ConfigError, match="every class of the model"):
            attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration=str(calibration))


def test_attach_open_set_skips_an_unreadable_clip_and_refuses_another_embeddings_threshold(tmp_path):
    from export.onnx_export import export_artifact
    from export.open_set import attach_open_set
    from tests.helpers import make_run, write_esc50

    data = write_esc50(tmp_path / "esc")
    broken = next((data / "audio").glob("1-*.wav"))
    broken.write_bytes(b"not audio")  # training skips such a file; so does the open set
    run = make_run(tmp_path / "run", labels=("low", "mid", "high"), labeled=str(data))
    artifact_dir = export_artifact(run, tmp_path / "model")
    assert attach_open_set(artifact_dir, str(data), train_folds=(1, 2), frr=0.2).labels == ("low", "mid", "high")
    joint = tmp_path / "openset_cv.json"  # measured with the pre-trained encoder at 0.6 of the cosine
    joint.write_text(json.dumps({"threshold_rad": 0.45, "frr": 0.02, "calibrated_on": "cv", "pretrained_share": 0.6}))
    with pytest.raises(errors.ConfigError, match="share 0.6"):
        attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration=str(joint))
    with pytest.raises(errors.ConfigError, match="not a threshold file"):
        attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration=str(tmp_path / "missing.json"))
    joint.write_text(json.dumps({"threshold_rad": 26.1, "frr": 0.02, "calibrated_on": "cv"}))  # degrees
    before = (artifact_dir / "openset.json").read_bytes()
    with pytest.raises(errors.ConfigError, match=r"angle in \(0, π\] \(radians\)"):
        attach_open_set(artifact_dir, str(data), train_folds=(1, 2), calibration=str(joint))
    assert (artifact_dir / "openset.json").read_bytes() == before and load_artifact(artifact_dir).open_set


@pytest.mark.parametrize("bad", [dict(threshold_rad=26.1), dict(threshold_rad=0.0), dict(frr=1.5),
                                 dict(enrol_margin=math.nan), dict(enrol_margin=2.0), dict(cosine_logit=(math.nan, 0.0)),
                                 dict(cosine_logit=(1.0,)), dict(class_thresholds_rad=(0.3, 0.4)),
                                 dict(class_thresholds_rad=(26.1,)), dict(one_shot_margin=-1.5),
                                 dict(one_shot_margin=math.nan)])
def test_an_open_set_out_of_range_cannot_be_made(bad):
    """Refused when made, so that save_open_set cannot write an artifact that no longer loads."""
    values = dict(prototypes=np.stack([unit(0.0)]), labels=("a",), threshold_rad=0.3, frr=0.05, calibrated_on="test")
    with pytest.raises(errors.ArtifactError):
        OpenSet(**{**values, **bad})


def test_the_margin_runs_from_one_shot_to_the_models_in_one_over_n():
    values = dict(prototypes=np.stack([unit(0.0)]), labels=("a",), threshold_rad=0.3, frr=0.05, calibrated_on="test")
    older = OpenSet(**values, enrol_margin=0.02)
    assert [older.margin_for(n) for n in (1, 3, 20)] == [0.02, 0.02, 0.02]  # an artifact without it: one margin
    model = OpenSet(**values, enrol_margin=0.0, one_shot_margin=-0.01)
    np.testing.assert_allclose([model.margin_for(n) for n in (1, 2, 5, 20)], [-0.01, -0.00375, 0.0, 0.0])
    assert OpenSet.from_dict(model.to_dict()).one_shot_margin == -0.01
    assert "one_shot_margin" not in older.to_dict() and OpenSet.from_dict(older.to_dict()).one_shot_margin is None
