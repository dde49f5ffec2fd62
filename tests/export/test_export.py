import fcntl
import json
import shutil
import threading

import numpy as np
import pytest
import torch

from core import errors
from core.answer import AnswerOptions, answer, softmax
from core.artifact import load_artifact
from core.clip import prepare
from core.errors import ExportValidationError, GPUUnavailable
from core.features import FrontendConfig
from core.runtime import RuntimeConfig, create_runtime, gpu_visible
from export.onnx_export import Tolerances, export_artifact, export_lock, publish, sweep_leftovers
from tests.helpers import make_run
from training.model import InferenceModel
from training.run import load_checkpoint, save_ensemble


def test_manifest_records_parity_and_provenance(artifact_dir):
    art = load_artifact(artifact_dir)
    m = art.manifest
    assert art.labels == ("dog", "rain", "siren") and m["num_classes"] == 3 and m["embedding_dim"] == 32
    assert m["parity"]["fp32"]["max_abs_logits"] <= 1e-4 and m["parity"]["fp32"]["top1_agreement"] == 1.0
    assert m["parity"]["fp16"]["min_embedding_cosine"] >= 0.999
    assert m["training"]["metrics"]["val_clip_accuracy"] == 0.5 and m["versions"]["onnxruntime"]
    assert m["normalisation"] == {"mean": -2.0, "std": 1.5}
    assert not list(artifact_dir.glob("*.data"))  # weights inside the one file


@pytest.mark.parametrize("batch", [1, 3, 64])
def test_runtime_matches_pytorch_at_any_batch(artifact_dir, run_dir, batch):
    runtime = create_runtime(load_artifact(artifact_dir), RuntimeConfig(device="cpu"))
    x = np.random.default_rng(batch).normal(-2, 1.5, size=(batch, 101, 96)).astype(np.float32)
    logits, emb = runtime.run(x)
    model, _ = load_checkpoint(run_dir)
    with torch.no_grad():
        ref_logits, ref_emb = InferenceModel(model)(torch.from_numpy(x)[:, None])
    assert logits.shape == (batch, 3) and emb.shape == (batch, 32)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_a_model_of_longer_windows_exports_and_answers_with_them(fixtures, tmp_path):
    """The window length is the checkpoint's: export traces it (here with the centred channel and the
    attention pooling, which export validates as any model) and a clip is cut into windows of it."""
    frontend = FrontendConfig(patch_frames=201, eval_hop_frames=100)
    run = make_run(tmp_path / "run", frontend=frontend, band_centring=True, attention_pool=True)
    art = load_artifact(export_artifact(run, tmp_path / "model"))
    assert art.frontend == frontend and art.manifest["input"]["shape"][2] == 201
    clip = prepare(fixtures / "1-27724-A-1.ogg", art.frontend, art.activity)  # 5 s: windows at 0, 1, 2, 3 s, end
    assert clip.patches.shape == (5, 201, 96)
    assert clip.starts_s[:4].tolist() == pytest.approx([0.0, 0.998, 1.995, 2.993], abs=1e-3)
    logits, emb = create_runtime(art, RuntimeConfig(device="cpu")).run(clip.patches)
    result = answer(logits, emb, clip.active, clip.starts_s, art.frontend.patch_seconds, art.labels, None, AnswerOptions())
    assert result.label in art.labels


def test_a_joint_embedding_exports_validated_with_its_pretrained_encoder(tmp_path):
    """--pretrained-share: the embedding joins the run's init encoder's; parity checks the whole graph."""
    pretrained = make_run(tmp_path / "pre", width=8, seed=1)
    run = make_run(tmp_path / "run", init=str(pretrained))
    art = load_artifact(export_artifact(run, tmp_path / "model", pretrained_share=0.75))
    m = art.manifest
    assert art.embedding_dim == 32 + 64 and m["parity"]["fp32"]["max_abs_embedding"] <= 1e-4
    assert m["embedding"]["pretrained_share"] == 0.75 and m["embedding"]["pretrained_encoder"]["run"] == str(pretrained)
    x = np.random.default_rng(0).normal(-2, 1.5, size=(2, 101, 96)).astype(np.float32)
    _, joint = create_runtime(art, RuntimeConfig(device="cpu")).run(x)
    _, own = create_runtime(load_artifact(export_artifact(run, tmp_path / "own")), RuntimeConfig(device="cpu")).run(x)
    np.testing.assert_allclose(joint[:, :32], 0.5 * own, atol=1e-5)  # √(1 − 0.75) of the fine-tuned embedding
    with pytest.raises(errors.ConfigError, match="not fine-tuned from a pre-trained encoder"):
        export_artifact(pretrained, tmp_path / "none", pretrained_share=0.5)
    other = make_run(tmp_path / "other", width=4, seed=2)  # --pretrained: another encoder than the run's init
    art = load_artifact(export_artifact(run, tmp_path / "joined", pretrained_share=0.5, pretrained=other))
    assert art.embedding_dim == 32 + 32 and art.manifest["embedding"]["pretrained_encoder"]["run"] == str(other)
    with pytest.raises(errors.ConfigError, match="only with a share"):
        export_artifact(run, tmp_path / "no-share", pretrained=other)
    shutil.rmtree(pretrained)
    make_run(pretrained, width=8, seed=3)  # another run where the init was: not the encoder it was fine-tuned from
    with pytest.raises(errors.ConfigError, match="was fine-tuned from run"):
        export_artifact(run, tmp_path / "moved", pretrained_share=0.5)


def test_fp16_variant_runs(artifact_dir):
    runtime = create_runtime(load_artifact(artifact_dir), RuntimeConfig(device="cpu", precision="fp16"))
    x = np.random.default_rng(0).normal(-2, 1.5, size=(4, 101, 96)).astype(np.float32)
    _, emb16 = runtime.run(x)
    _, emb32 = create_runtime(load_artifact(artifact_dir), RuntimeConfig(device="cpu")).run(x)
    assert ((emb16 * emb32).sum(axis=1) > 0.999).all()


def test_tampered_model_is_refused(artifact_dir, tmp_path):
    copy = shutil.copytree(artifact_dir, tmp_path / "tampered")
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(errors.ArtifactError, match="altered"):
        load_artifact(copy)
    variant = json.loads((copy / "manifest.json").read_text())
    assert variant["variants"]["fp16"]["file"] == "model.fp16.onnx"


def test_tampered_fp16_variant_is_refused(artifact_dir, tmp_path):
    copy = shutil.copytree(artifact_dir, tmp_path / "tampered16")
    with open(copy / "model.fp16.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(errors.ArtifactError, match="fp16"):
        create_runtime(load_artifact(copy), RuntimeConfig(device="cpu", precision="fp16"))


def test_failed_validation_writes_no_manifest(run_dir, tmp_path):
    impossible = Tolerances(max_abs=-1.0, top1_agreement=1.1)
    with pytest.raises(ExportValidationError) as info:
        export_artifact(run_dir, tmp_path / "out", tolerances=impossible)
    message = str(info.value)
    assert "logits" in message and "embedding" in message and "top-1" in message  # all collected
    assert not (tmp_path / "out").exists()


def test_an_opset_the_exporter_does_not_write_is_refused(run_dir, tmp_path):
    """torch's exporter writes its own opset whatever it is asked: the manifest recorded the one asked for."""
    with pytest.raises(errors.ConfigError, match="--opset 13: torch's exporter wrote opset 18"):
        export_artifact(run_dir, tmp_path / "out", opset=13)
    assert not (tmp_path / "out").exists()


def test_an_onnx_model_that_answers_nan_fails_its_parity_check(run_dir, tmp_path, monkeypatch):
    """max() keeps its first argument against a NaN: the check must not, or NaN outputs pass as 0 error."""
    import onnxruntime

    real = onnxruntime.InferenceSession

    class AnswersNaN(real):
        def run(self, names, feeds, *args):
            return [np.full_like(y, np.nan) for y in super().run(names, feeds, *args)]

    monkeypatch.setattr(onnxruntime, "InferenceSession", AnswersNaN)
    with pytest.raises(ExportValidationError, match="nan"):
        export_artifact(run_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(gpu_visible(), reason="checks the CPU fallback; this machine has a GPU")
def test_gpu_request_without_gpu_is_reported_or_refused(artifact_dir, caplog):
    art = load_artifact(artifact_dir)
    runtime = create_runtime(art, RuntimeConfig(device="cuda"))
    assert runtime.providers == ["CPUExecutionProvider"] and not runtime.on_gpu
    assert "a GPU was asked for" in caplog.text
    assert runtime.describe()["requested_providers"][0] in ("CUDAExecutionProvider", "CPUExecutionProvider")
    with pytest.raises(GPUUnavailable):
        create_runtime(art, RuntimeConfig(device="cuda", require_gpu=True))
    auto = create_runtime(art, RuntimeConfig(device="auto"))
    assert auto.providers == ["CPUExecutionProvider"]


def test_runtime_settings_are_validated():
    with pytest.raises(errors.ConfigError, match="valid"):
        RuntimeConfig(device="tpu")
    with pytest.raises(errors.ConfigError, match="valid"):
        RuntimeConfig(graph_optimization="max")


@pytest.mark.gpu
def test_cuda_session_is_on_the_gpu(artifact_dir):
    runtime = create_runtime(load_artifact(artifact_dir), RuntimeConfig(device="cuda", require_gpu=True))
    assert runtime.on_gpu


@pytest.mark.gpu
def test_the_fp16_variant_answers_as_fp32_in_cudas_fp16_arithmetic(artifact_dir):
    """Export checks fp16 on the CPU provider, which computes most of it in float32 after casts; on CUDA
    it runs in fp16, where an overflow would show."""
    art = load_artifact(artifact_dir)
    x = np.random.default_rng(0).normal(-2, 1.5, size=(64, 101, 96)).astype(np.float32)
    logits, emb = create_runtime(art, RuntimeConfig(device="cpu", precision="fp32")).run(x)
    half = create_runtime(art, RuntimeConfig(device="cuda", precision="fp16", require_gpu=True))
    logits16, emb16 = half.run(x)
    assert half.on_gpu and np.isfinite(logits16).all() and (logits16.argmax(1) == logits.argmax(1)).mean() >= 0.99
    assert np.einsum("nd,nd->n", emb, emb16).min() >= 0.999


def test_an_ensemble_of_runs_exports_as_one_graph_that_answers_their_mean(tmp_path):
    """training.run.save_ensemble: a run directory of runs, exported (joint embedding included) into one
    validated graph whose softmax is the mean of the runs' and whose embedding holds each run's."""
    pretrained = make_run(tmp_path / "pre", width=8, seed=1)
    runs = [make_run(tmp_path / f"run{seed}", init=str(pretrained), seed=seed) for seed in (2, 3)]
    save_ensemble(runs, tmp_path / "ensemble")
    art = load_artifact(export_artifact(tmp_path / "ensemble", tmp_path / "model", pretrained_share=0.6))
    assert art.embedding_dim == 2 * 32 + 64 and art.manifest["parity"]["fp32"]["top1_agreement"] == 1.0
    assert art.manifest["training"]["run_id"].startswith("ensemble-")
    assert art.manifest["training"]["ensemble"] == [str(run) for run in runs]
    assert art.manifest["normalisation"] == {"mean": -2.0, "std": 1.5, "runs": [{"mean": -2.0, "std": 1.5}] * 2}
    x = np.random.default_rng(0).normal(-2, 1.5, size=(3, 101, 96)).astype(np.float32)
    cpu = RuntimeConfig(device="cpu")
    logits, _ = create_runtime(art, cpu).run(x)
    singles = [create_runtime(load_artifact(export_artifact(run, tmp_path / f"model-{run.name}")), cpu).run(x)[0]
               for run in runs]
    mean = sum(softmax(z) for z in singles) / 2
    np.testing.assert_allclose(softmax(logits), mean, atol=1e-5)
    with pytest.raises(errors.ConfigError, match="ensemble of 2 runs"):
        load_checkpoint(tmp_path / "ensemble")
    other = make_run(tmp_path / "other", labels=("a", "b", "c"))
    with pytest.raises(errors.ConfigError, match="differ in their labels"):
        save_ensemble([runs[0], other], tmp_path / "mixed")
    with pytest.raises(errors.ConfigError, match="others from random weights"):
        save_ensemble([runs[0], make_run(tmp_path / "plain")], tmp_path / "mixed")
    other_pre = make_run(tmp_path / "pre-b", width=8, seed=4)  # another pre-training: the first run's joins
    save_ensemble([runs[0], make_run(tmp_path / "run-b", init=str(other_pre), seed=5)], tmp_path / "across")
    art = load_artifact(export_artifact(tmp_path / "across", tmp_path / "model-across", pretrained_share=0.6))
    assert art.embedding_dim == 2 * 32 + 64 and art.manifest["embedding"]["pretrained_encoder"]["run"] == str(pretrained)


def test_export_replaces_only_an_artifact_and_never_the_runs_it_comes_from(tmp_path):
    run = make_run(tmp_path / "runs" / "ft")
    with pytest.raises(errors.ConfigError, match="not a soundarc artifact"):
        export_artifact(run, tmp_path / "runs")  # a folder of runs: untouched
    with pytest.raises(errors.ConfigError, match="not a soundarc artifact"):
        export_artifact(run, run)
    assert (run / "checkpoint").is_dir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(errors.ConfigError, match="not a soundarc artifact"):
        export_artifact(run, tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert load_artifact(export_artifact(run, tmp_path / "empty")).labels == ("dog", "rain", "siren")
    (tmp_path / "empty" / "enrolled.json").write_text("{}")  # the service's classes, beside the model
    model_id = load_artifact(export_artifact(run, tmp_path / "empty")).model_id  # the same model again
    assert (tmp_path / "empty" / "enrolled.json").read_text() == "{}"  # carried over, not deleted with the model
    export_artifact(make_run(tmp_path / "runs" / "another", seed=1), tmp_path / "empty")
    assert not (tmp_path / "empty" / "enrolled.json").exists()  # another model's server would refuse the file
    assert (tmp_path / "empty" / f"enrolled.{model_id}.json").read_text() == "{}"
    export_artifact(make_run(tmp_path / "runs" / "third", seed=2), tmp_path / "empty")
    assert (tmp_path / "empty" / f"enrolled.{model_id}.json").read_text() == "{}"  # kept by an export, kept again
    (tmp_path / "link").symlink_to(tmp_path / "empty")
    with pytest.raises(errors.ConfigError, match="symbolic link"):
        export_artifact(run, tmp_path / "link")
    (tmp_path / "empty" / "NOTES.txt").write_text("mine")  # a user's file beside the artifact: export would delete it
    (tmp_path / "empty" / "checkpoint").mkdir()
    with pytest.raises(errors.ConfigError, match=r"holds what is not the artifact's \(NOTES.txt, checkpoint\)"):
        export_artifact(run, tmp_path / "empty")
    assert (tmp_path / "empty" / "NOTES.txt").read_text() == "mine"


def test_an_enrolment_while_an_artifact_is_replaced_is_not_lost(tmp_path):
    """publish carries the enrolled classes over under the store's lock: a server that enrols meanwhile
    (here: holds the lock and writes) is waited for, and its write reaches the new artifact."""
    out, staging = tmp_path / "model", tmp_path / "staging"
    for d in (out, staging):
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"model_id": "same"}))
    (out / "enrolled.json").write_text("first")
    with open(out / "enrolled.json.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a server in the middle of an enrolment
        replacing = threading.Thread(target=publish, args=(staging, out))
        replacing.start()
        replacing.join(0.5)
        assert replacing.is_alive()  # waits for the enrolment
        (out / "enrolled.json").write_text("first, second")
    replacing.join(10)
    assert (out / "enrolled.json").read_text() == "first, second"


def test_a_failed_finish_leaves_the_artifact_that_was_there(tmp_path):
    """The open set is attached before the new artifact replaces the old one: a failure there (an
    unreadable calibration file, say) must not leave OUT_DIR without a model or with half of one."""
    run = make_run(tmp_path / "run")
    out = export_artifact(run, tmp_path / "model")
    before = (out / "manifest.json").read_text()

    def fail(staged):
        assert (staged / "manifest.json").exists() and staged != out
        raise errors.ConfigError("no calibration")
    with pytest.raises(errors.ConfigError, match="no calibration"):
        export_artifact(make_run(tmp_path / "other", seed=1), out, finish=fail)
    assert (out / "manifest.json").read_text() == before and load_artifact(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.export.lock", "model", "other", "run"]  # no staging
    export_artifact(make_run(tmp_path / "other", seed=1), out, finish=lambda staged: (staged / "extra").write_text("x"))
    assert (out / "extra").exists() and (out / "manifest.json").read_text() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.export.lock", "model", "other", "run"]  # old removed


def test_what_a_killed_export_left_is_swept_by_the_next(tmp_path):
    """kill -9 leaves a staging folder (during the export) or the old artifact moved aside (during the swap);
    an export holds a lock beside OUT, so a second one at once is refused rather than sweep the first's work."""
    run = make_run(tmp_path / "run")
    out = export_artifact(run, tmp_path / "model")
    before = (out / "manifest.json").read_text()
    out.rename(tmp_path / ".model-old-ab_1")  # killed between its two renames: no artifact at OUT
    (tmp_path / ".model-export-xyz").mkdir()
    (tmp_path / ".other-export-xyz").mkdir()  # another artifact's: not this export's business
    with export_lock(out):
        sweep_leftovers(out)
        with pytest.raises(errors.ConfigError, match="another soundarc export is writing"):
            export_artifact(run, out)
    assert (out / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.export.lock", ".other-export-xyz", "model", "run"]
    (tmp_path / ".model-old-cd_2").mkdir()  # killed after the swap: the old one is deleted
    export_artifact(run, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.export.lock", ".other-export-xyz", "model", "run"]


@pytest.mark.parametrize("args,needle", [
    (["export", "{tmp}/no-run", "{tmp}/out", "--open-set"], "has no checkpoint"),
    (["export", "{tmp}/no-run", "{tmp}/out", "--open-set", "--frr", "1.5"], "--frr"),
    (["quantize", "{tmp}/out", "--audio", "{tmp}", "--max-calibration-windows", "0"], "--max-calibration-windows"),
    (["index", "build", "--from", "{tmp}/results", "--out", "{tmp}/file"], "is a file"),
])
def test_command_mistakes_are_one_line_not_a_traceback(tmp_path, args, needle):
    import subprocess
    import sys
    from pathlib import Path

    from batch.results import PartWriter

    writer = PartWriter(tmp_path / "results", "jsonl", {"model_id": "m"})  # one row with an embedding
    writer.add({"id": "a.wav", "label": "dog", "score": 0.9, "duration_s": 1.0, "embedding": [1.0, 0.0], "model_id": "m"})
    writer.close({})
    (tmp_path / "file").write_text("mine")
    cmd = [sys.executable, "-m", "soundarc.cli", *(a.format(tmp=tmp_path) for a in args)]
    result = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr, result.stderr


@pytest.mark.parametrize("damage", ["checkpoint.json:{", "checkpoint.json:[1, 2]", "model.safetensors:cut"])
def test_a_damaged_run_is_named_not_a_traceback(tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(make_run(tmp_path / "original"), run)
    name, how = damage.split(":", 1)
    file = run / "checkpoint" / name
    file.write_bytes(file.read_bytes()[:100] if how == "cut" else how.encode())
    with pytest.raises(errors.ConfigError, match="damaged"):
        export_artifact(run, tmp_path / "out")


def test_an_unfinished_run_exports_with_a_warning(tmp_path, caplog):
    run = tmp_path / "run"
    shutil.copytree(make_run(tmp_path / "original"), run)
    info_file = run / "checkpoint" / "checkpoint.json"
    info = json.loads(info_file.read_text())
    info_file.write_text(json.dumps({**info, "metrics": {**info["metrics"], "epoch": 24},
                                     "config": {**info["config"], "epochs": 200}}))
    with caplog.at_level("WARNING"):
        export_artifact(run, tmp_path / "out")
    assert "stopped after epoch 24 of 200" in caplog.text
