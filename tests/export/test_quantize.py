"""`soundarc quantize`: an int8 variant (its stem convolutions fp32), calibrated on real clips, validated
against fp32, picked by the runtime on a CPU; a variant that misses the contract is refused and nothing
is written."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from core import errors, runtime
from core.artifact import load_artifact
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime
from export import quantize


@pytest.fixture
def artifact(test_artifact, tmp_path):
    shutil.copytree(test_artifact, tmp_path / "model")
    return tmp_path / "model"


def producers(graph) -> dict[str, str]:
    """{tensor name: the op type of the node that writes it}."""
    return {output: node.op_type for node in graph.node for output in node.output}


def test_int8_variant_agrees_with_fp32_and_is_picked_on_a_cpu(artifact, fixtures, monkeypatch):
    before = load_artifact(artifact).model_id
    report = quantize.quantize_artifact(artifact, [fixtures])
    loaded = load_artifact(artifact)  # checksums hold
    variant = loaded.manifest["variants"]["int8"]
    assert loaded.model_id == before and report["int8"] == variant
    assert variant["validation"]["embedding_cosine_p01"] >= 0.99
    graph = onnx.load(str(artifact / variant["file"])).graph
    made_by = producers(graph)
    assert {"QuantizeLinear", "DequantizeLinear"} <= set(made_by.values())  # QDQ, not dynamic quantization
    stems, convs = set(quantize.stem_convs(graph)), [node for node in graph.node if node.op_type == "Conv"]
    assert stems and all((made_by.get(c.input[1]) == "DequantizeLinear") == (c.name not in stems) for c in convs)
    pools = [node for node in graph.node if node.op_type == "MaxPool"]  # fp32: quantized after, not before
    assert pools and all(made_by[p.input[0]] != "DequantizeLinear" for p in pools)

    disabled, session = [], runtime.ort.InferenceSession  # which graph optimizers each session turns off
    monkeypatch.setattr(runtime.ort, "InferenceSession",
                        lambda *args, **kwargs: disabled.append(kwargs["disabled_optimizers"]) or session(*args, **kwargs))
    auto = create_runtime(loaded, RuntimeConfig(device="cpu"))
    fp32 = create_runtime(loaded, RuntimeConfig(device="cpu", precision="fp32"))
    assert auto.precision == "int8" and fp32.precision == "fp32" and auto.describe()["precision"] == "int8"
    assert disabled == [runtime.INT8_DISABLED_OPTIMIZERS, []]
    clip = prepare(fixtures / "1-27724-A-1.ogg", loaded.frontend)
    (_, e8), (_, e32) = auto.run(clip.patches), fp32.run(clip.patches)
    cos = np.sum(e32 * e8, axis=1) / np.linalg.norm(e32, axis=1) / np.linalg.norm(e8, axis=1)
    assert cos.min() > 0.98


@pytest.mark.skipif(runtime.gpu_visible(), reason="checks the CPU fallback; this machine has a GPU")
def test_a_visible_gpu_that_cuda_cannot_use_is_reported_with_the_cpu_setting(artifact, fixtures, monkeypatch, caplog):
    """device auto with a GPU device node but no usable CUDA: the model runs on the CPU at the precision
    chosen for the GPU, and the log says so and names the setting that runs the int8 variant."""
    quantize.quantize_artifact(artifact, [fixtures], max_windows=64)
    monkeypatch.setattr(runtime, "gpu_visible", lambda: True)
    fallen_back = create_runtime(load_artifact(artifact), RuntimeConfig(device="auto"))
    assert not fallen_back.on_gpu and fallen_back.precision == "fp32"
    assert "CUDA could not be used" in caplog.text and "--device cpu) runs the int8 variant" in caplog.text


def test_a_quantize_stopped_while_replacing_the_variant_leaves_a_model_that_runs(artifact, fixtures, monkeypatch):
    """Stopped between the old entry's removal and the new one's: no int8 variant (fp32 runs), never an
    int8 file whose sha256 the manifest does not hold (which no CPU server could start from)."""
    quantize.quantize_artifact(artifact, [fixtures], max_windows=64)
    drop = quantize._drop_int8_entry

    def drop_then_stop(root):
        drop(root)
        raise KeyboardInterrupt
    monkeypatch.setattr(quantize, "_drop_int8_entry", drop_then_stop)
    with pytest.raises(KeyboardInterrupt):
        quantize.quantize_artifact(artifact, [fixtures], max_windows=64)
    loaded = load_artifact(artifact)
    assert "int8" not in loaded.manifest.get("variants", {})
    assert create_runtime(loaded, RuntimeConfig(device="cpu")).precision == "fp32"


def test_the_int8_session_keeps_the_stem_pooling_fp32(artifact, fixtures, tmp_path):
    """With the runtime's optimizers off, ONNX Runtime pools before it quantizes; with all on, after."""
    quantize.quantize_artifact(artifact, [fixtures])

    def pools_read_quantized(disabled: list[str]) -> bool:
        options, optimized = ort.SessionOptions(), tmp_path / f"optimized{len(disabled)}.onnx"
        options.optimized_model_filepath, options.log_severity_level = str(optimized), 3
        ort.InferenceSession(str(artifact / quantize.INT8_FILE), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)
        graph = onnx.load(str(optimized)).graph
        made_by = producers(graph)
        return any(made_by.get(node.input[0]) == "QuantizeLinear" for node in graph.node if node.op_type == "MaxPool")

    assert pools_read_quantized([]) and not pools_read_quantized(runtime.INT8_DISABLED_OPTIMIZERS)


def test_a_variant_that_misses_the_contract_is_refused(artifact, fixtures, monkeypatch):
    monkeypatch.setitem(quantize.CONTRACT, "min_embedding_cosine_p01", 1.01)  # no model can meet it
    with pytest.raises(errors.ExportValidationError, match="embedding_cosine_p01"):
        quantize.quantize_artifact(artifact, [fixtures])
    assert "int8" not in load_artifact(artifact).manifest.get("variants", {})
    assert not list(artifact.glob("*int8*"))
    with pytest.raises(errors.ArtifactError, match="no int8 variant"):
        create_runtime(load_artifact(artifact), RuntimeConfig(device="cpu", precision="int8"))


def test_clips_without_sound_are_refused_before_calibration(artifact, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "hush.wav", np.zeros(22_050 * 2, np.float32), 22_050)
    with pytest.raises(errors.ConfigError, match="no --audio clip holds sound"):
        quantize.quantize_artifact(artifact, [tmp_path / "hush.wav"])


def test_cli(artifact, fixtures, capsys):
    from soundarc.cli import main

    assert main(["quantize", str(artifact), "--audio", str(fixtures)]) == 0
    assert json.loads(capsys.readouterr().out)["int8"]["file"] == quantize.INT8_FILE
