"""`soundarc quantize`: an int8 artifact, calibrated on real clips, validated against fp32, served
like any artifact; a model that misses the contract is refused and nothing is written."""

import json

import numpy as np
import onnx
import pytest

from core import errors
from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime
from export import quantize


def test_int8_artifact_agrees_with_fp32(test_artifact, fixtures, tmp_path):
    report = quantize.quantize_artifact(test_artifact, tmp_path / "int8", [fixtures])
    int8, fp32 = load_artifact(tmp_path / "int8"), load_artifact(test_artifact)  # checksums hold
    assert int8.model_id != fp32.model_id and int8.model_id.startswith(fp32.model_id + "-int8-")
    section = int8.manifest["quantization"]
    assert section["from_model_id"] == fp32.model_id and section["validation"] == report["validation"]
    assert section["validation"]["embedding_cosine_p01"] >= 0.99
    ops = {node.op_type for node in onnx.load(str(int8.model_path)).graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops  # QDQ, not dynamic quantization
    clip = prepare(fixtures / "1-27724-A-1.ogg", fp32.frontend)
    _, e32 = create_runtime(fp32, RuntimeConfig(device="cpu")).run(clip.patches)
    _, e8 = create_runtime(int8, RuntimeConfig(device="cpu")).run(clip.patches)
    cos = np.sum(e32 * e8, axis=1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e8, axis=1)
    assert cos.min() > 0.98


def test_a_model_that_misses_the_contract_is_refused(test_artifact, fixtures, tmp_path, monkeypatch):
    monkeypatch.setitem(quantize.CONTRACT, "min_embedding_cosine_p01", 1.01)  # no model can meet it
    with pytest.raises(errors.ExportValidationError, match="embedding_cosine_p01"):
        quantize.quantize_artifact(test_artifact, tmp_path / "int8", [fixtures])
    assert not (tmp_path / "int8").exists()


def test_cli(test_artifact, fixtures, tmp_path, capsys):
    from soundarc.cli import main

    assert main(["quantize", str(test_artifact), str(tmp_path / "q"), "--audio", str(fixtures)]) == 0
    assert json.loads(capsys.readouterr().out)["model_id"] == load_artifact(tmp_path / "q").model_id
