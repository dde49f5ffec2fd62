"""The artifact reader refuses what is missing, altered, of an unknown version, or inconsistent."""

import json
import shutil

import pytest

from core import errors
from core.artifact import MANIFEST_VERSION, load_artifact, sha256_file, write_json_atomic
from core.features import FrontendConfig
from core.runtime import RuntimeConfig, create_runtime


def make_artifact(root, labels=("a", "b")):
    root.mkdir(parents=True, exist_ok=True)
    (root / "model.onnx").write_bytes(b"not really onnx, but hashed all the same")
    (root / "frontend.json").write_text(FrontendConfig().to_json())
    write_json_atomic(root / "labels.json", list(labels))
    manifest = {
        "version": MANIFEST_VERSION, "model_id": "test-1", "sha256": sha256_file(root / "model.onnx"),
        "model_file": "model.onnx", "opset": 17, "embedding_dim": 8, "num_classes": len(labels),
    }
    write_json_atomic(root / "manifest.json", manifest)
    return root


def test_valid_artifact_loads(tmp_path):
    art = load_artifact(make_artifact(tmp_path / "m"))
    assert art.labels == ("a", "b") and art.model_id == "test-1" and art.frontend == FrontendConfig()


def test_altered_model_is_refused(tmp_path):
    root = make_artifact(tmp_path / "m")
    with open(root / "model.onnx", "ab") as f:
        f.write(b"!")
    with pytest.raises(errors.ArtifactError, match="altered"):
        load_artifact(root)


@pytest.mark.parametrize("missing", ["model.onnx", "frontend.json", "labels.json", "manifest.json"])
def test_missing_file_is_refused(tmp_path, missing):
    root = make_artifact(tmp_path / "m")
    (root / missing).unlink()
    with pytest.raises(errors.ArtifactError):
        load_artifact(root)


def test_unknown_version_and_bad_json_are_refused(tmp_path):
    root = make_artifact(tmp_path / "m")
    manifest = json.loads((root / "manifest.json").read_text())
    write_json_atomic(root / "manifest.json", {**manifest, "version": 99})
    with pytest.raises(errors.ArtifactError, match="unknown manifest version"):
        load_artifact(root)
    (root / "manifest.json").write_text("{ nope")
    with pytest.raises(errors.ArtifactError, match="not valid JSON"):
        load_artifact(root)


def test_no_directory(tmp_path):
    with pytest.raises(errors.ArtifactError, match="no model artifact"):
        load_artifact(tmp_path / "absent")


def test_label_count_must_match(tmp_path):
    root = make_artifact(tmp_path / "m")
    write_json_atomic(root / "labels.json", ["only-one"])
    with pytest.raises(errors.ArtifactError, match="2 labels"):
        load_artifact(root)
    for labels, needle in ((["a", "A"], "one name"), (["a", "_Silence_"], "answers for no known class"),
                           (["a", ""], "without a name"), (["a", None], "without a name")):
        write_json_atomic(root / "labels.json", labels)
        with pytest.raises(errors.ArtifactError, match=needle):
            load_artifact(root)


@pytest.mark.parametrize("edit", [{"sample_rate": 0}, {"sample_rate": "22050"}, {"n_fft": 64}, {"eval_hop_frames": 0},
                                  {"fmax": 1e9}, {"fmin": float("nan")}])
def test_a_front_end_that_cannot_work_is_refused(tmp_path, edit):
    """Each was a worker restarting in a loop, a 500 at every request, or wrong windows served."""
    root = make_artifact(tmp_path / "m")
    (root / "frontend.json").write_text(json.dumps({**json.loads(FrontendConfig().to_json()), **edit}))
    with pytest.raises(errors.ArtifactError, match="not a valid front-end"):
        load_artifact(root)


def test_a_manifest_that_is_not_an_object_is_refused(tmp_path):
    root = make_artifact(tmp_path / "m")
    (root / "manifest.json").write_text("null")
    with pytest.raises(errors.ArtifactError, match="must hold a JSON object"):
        load_artifact(root)
    (root / "manifest.json").unlink()
    (root / "manifest.json").mkdir()
    with pytest.raises(errors.ArtifactError, match="cannot read"):
        load_artifact(root)


@pytest.mark.parametrize("key,value,needle", [
    ("activity", None, "activity is not valid"),
    ("activity", {"floor_db": float("nan")}, "finite numbers"),  # every clip answered "silence"
    ("activity", {"floor_db": "-60"}, "finite numbers"),
    ("activity", {"floor": -60}, "unknown activity keys"),  # a 422 at every request, blaming the client
    ("events", {"on": float("nan")}, "off <= on <= 1"),  # no event ever
    ("events", {"on": "high"}, "events is not valid"),
    ("model_file", 5, "model_file must be"),
    ("embedding_dim", "abc", "positive integers"),  # was a traceback at start
    ("num_classes", 2.0, "positive integers"),
    ("model_id", None, "must be text"),
    ("variants", [], "variants"),
    ("variants", {"int8": {"file": "model.int8.onnx"}}, "variants"),
])
def test_manifest_fields_are_checked_when_the_artifact_loads(tmp_path, key, value, needle):
    root = make_artifact(tmp_path / "m")
    manifest = json.loads((root / "manifest.json").read_text())
    write_json_atomic(root / "manifest.json", {**manifest, key: value})
    with pytest.raises(errors.ArtifactError, match=needle):
        load_artifact(root)


def test_an_open_set_without_an_angle_for_threshold_is_refused(test_artifact, tmp_path):
    root = shutil.copytree(test_artifact, tmp_path / "m")
    open_set = json.loads((root / "openset.json").read_text())
    write_json_atomic(root / "openset.json", {**open_set, "threshold_rad": float("nan")})
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["openset"]["sha256"] = sha256_file(root / "openset.json")
    write_json_atomic(root / "manifest.json", manifest)
    with pytest.raises(errors.ArtifactError, match="no angle"):
        load_artifact(root)


@pytest.mark.parametrize("edit", ["n_mels", "labels", "embedding_dim"])
def test_a_model_whose_sizes_differ_from_its_artifacts_files_is_refused(test_artifact, tmp_path, edit):
    """An edit of frontend.json, labels.json (with the manifest's count) or the manifest alone."""
    root = shutil.copytree(test_artifact, tmp_path / "m")
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["files"]  # as an artifact exported before the two files' sha256 were kept: their sizes still checked
    if edit == "n_mels":
        frontend = json.loads((root / "frontend.json").read_text())
        write_json_atomic(root / "frontend.json", {**frontend, "n_mels": 64})
    elif edit == "labels":
        labels = json.loads((root / "labels.json").read_text())
        write_json_atomic(root / "labels.json", labels[:-1])
        manifest = {**manifest, "num_classes": len(labels) - 1}
        manifest.pop("openset")  # whose prototypes would already be refused
    else:
        manifest = {**manifest, "embedding_dim": manifest["embedding_dim"] * 2}
        manifest.pop("openset")
    write_json_atomic(root / "manifest.json", manifest)
    with pytest.raises(errors.ArtifactError, match="sizes"):
        create_runtime(load_artifact(root), RuntimeConfig(device="cpu", precision="fp32"))


@pytest.mark.parametrize("name", ["frontend.json", "labels.json"])
def test_a_front_end_or_labels_edited_after_export_is_refused(test_artifact, tmp_path, name):
    root = shutil.copytree(test_artifact, tmp_path / "m")
    value = json.loads((root / name).read_text())
    edited = value[::-1] if name == "labels.json" else {**value, "fmin": value["fmin"] + 10}  # a swap; a sane value
    write_json_atomic(root / name, edited)
    with pytest.raises(errors.ArtifactError, match=f"{name} does not match its sha256 .* delete files.{name}"):
        load_artifact(root)
    manifest = json.loads((root / "manifest.json").read_text())
    write_json_atomic(root / "manifest.json", {**manifest, "files": {k: v for k, v in manifest["files"].items() if k != name}})
    if name == "frontend.json":  # taken as it is once its entry is gone
        assert load_artifact(root).frontend.fmin == value["fmin"] + 10
    else:  # the open set's prototypes name the classes in the model's order: still refused, by them
        with pytest.raises(errors.ArtifactError, match="prototypes"):
            load_artifact(root)


def test_a_full_disk_names_the_file_it_could_not_write(tmp_path, monkeypatch):
    def full_disk(fd):
        raise OSError(28, "No space left on device")  # as a write or fsync raises it: no file named
    monkeypatch.setattr("os.fsync", full_disk)
    with pytest.raises(OSError, match="store.json"):
        write_json_atomic(tmp_path / "store.json", {})
    assert not list(tmp_path.iterdir())

    def unnumbered(fd):
        raise OSError("a library's message")  # no errno: its message kept as it is, no file added
    monkeypatch.setattr("os.fsync", unnumbered)
    with pytest.raises(OSError) as info:
        write_json_atomic(tmp_path / "store.json", {})
    assert str(info.value) == "a library's message"


def test_a_failed_atomic_write_leaves_the_file_as_it_was_and_no_temporary_file(tmp_path):
    write_json_atomic(tmp_path / "store.json", {"classes": ["bell"]})
    with pytest.raises(TypeError):
        write_json_atomic(tmp_path / "store.json", {"classes": [object()]})  # not JSON: fails halfway through
    assert json.loads((tmp_path / "store.json").read_text()) == {"classes": ["bell"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store.json"]
