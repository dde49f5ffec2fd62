"""The artifact reader refuses what is missing, altered, or of an unknown version."""

import json

import pytest

from core import errors
from core.artifact import MANIFEST_VERSION, load_artifact, sha256_file, write_json_atomic
from core.features import FrontendConfig


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
