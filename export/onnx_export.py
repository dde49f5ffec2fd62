"""Checkpoint -> validated ONNX artifact (docs/design.md §5).

    run dir ─▶ InferenceModel (normalisation inside) ─▶ torch.onnx.export (dynamic batch, one file)
            ─▶ [fp16 variant] ─▶ parity: ONNX Runtime (CPU) vs PyTorch on seeded and real patches
            ─▶ manifest.json (written last, only when every check passed) ─▶ [open set: finish()]
            ─▶ OUT_DIR (replaced only once the new artifact is whole; only an artifact is replaced)
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from core import errors
from core.activity import ActivityConfig
from core.artifact import (
    FRONTEND_FILE,
    HASHED_FILES,
    LABELS_FILE,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    MODEL_FILE,
    load_artifact,
    sha256_file,
    write_json_atomic,
)
from core.audio import decode
from core.classes import STORE_FILE
from core.features import FrontendConfig, log_mel, patches
from core.runtime import RuntimeConfig, create_runtime
from training.model import InferenceModel
from training.run import load_inference_model

log = logging.getLogger(__name__)

FP16_FILE = "model.fp16.onnx"
BATCH_SIZES = (1, 7, 64)
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


@dataclass
class Tolerances:
    max_abs: float = 1e-4  # fp32: logits and embeddings
    top1_agreement: float = 1.0
    fp16_min_cosine: float = 0.999
    fp16_top1_agreement: float = 0.99


@dataclass
class ParityReport:
    precision: str
    batch_sizes: tuple[int, ...]
    max_abs_logits: float = 0.0
    max_abs_embedding: float = 0.0
    min_embedding_cosine: float = 1.0
    top1_agreement: float = 1.0
    failures: list[str] = field(default_factory=list)
    # what ran the ONNX side: on the CPU provider an fp16 model mostly computes in float32 after casts, so its
    # check covers the rounding of the weights, not CUDA's fp16 arithmetic (the `gpu` tests of tests/export do)
    provider: str = "CPUExecutionProvider"


def export_artifact(run_dir: str | Path, out_dir: str | Path, fp16: bool = False, opset: int = 18,
                    real_audio: list[Path] | None = None, tolerances: Tolerances = Tolerances(),
                    pretrained_share: float = 0.0, pretrained: str | Path | None = None,
                    finish: Callable[[Path], object] | None = None) -> Path:
    """Export a run's checkpoint to OUT_DIR; raises ExportValidationError (no manifest) on a parity failure.
    `pretrained_share` > 0: a joint embedding with a pre-trained encoder (training.model.InferenceModel):
    `pretrained`, by default the one the run was fine-tuned from. `finish(staged_dir)` completes the
    artifact (the open set) before it replaces OUT_DIR, so that any failure leaves OUT_DIR as it was."""
    net, info = load_inference_model(run_dir, pretrained_share, pretrained)
    frontend = FrontendConfig.from_dict(info["frontend"])
    out = Path(out_dir)
    with export_lock(out):  # one export at a time into OUT: what a killed one left is swept under it
        sweep_leftovers(out)
        check_destination(out, [Path(run_dir), *([Path(info["pretrained"]["run"])] if "pretrained" in info else [])])
        config = info.get("config", {})
        done, planned = info.get("metrics", {}).get("epoch"), config.get("probe_epochs" if config.get("probe") else "epochs")
        if isinstance(done, int) and isinstance(planned, int) and done < planned:
            log.warning("%s stopped after epoch %d of %d: these are the weights of an unfinished run", run_dir, done, planned)
        inputs = validation_inputs(frontend, info["normalisation"], real_audio)  # a bad --audio is refused before any work
        staging = Path(tempfile.mkdtemp(prefix=_leftover_prefix(out, "export"), dir=out.parent))  # same file system: rename
        staging.chmod(0o755)
        try:
            onnx_to_file(net, frontend, staging / MODEL_FILE, opset)
            (staging / FRONTEND_FILE).write_text(frontend.to_json() + "\n")
            write_json_atomic(staging / LABELS_FILE, info["labels"])
            if fp16:
                convert_fp16(staging / MODEL_FILE, staging / FP16_FILE)
            reports = [check_parity(net, staging / MODEL_FILE, inputs, "fp32", tolerances)]
            if fp16:
                reports.append(check_parity(net, staging / FP16_FILE, inputs, "fp16", tolerances))
            failures = [f for r in reports for f in r.failures]
            if failures:
                raise errors.ExportValidationError("export failed validation, no manifest written:\n  " + "\n  ".join(failures))
            manifest = build_manifest(staging, info, opset, reports, frontend, fp16)
            write_json_atomic(staging / MANIFEST_FILE, manifest)
            load_artifact(staging)  # the reader the service uses must accept it
            if finish is not None:
                finish(staging)
            publish(staging, out)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    log.info("artifact %s written to %s", manifest["model_id"], out)
    return out


def check_destination(out: Path, sources: list[Path]) -> None:
    """Refuse, before any work, an OUT_DIR that export would wrongly replace: something other than an
    artifact (a run, a folder of runs, a file), a symbolic link (name its target) or a folder holding
    the runs it is exported from."""
    if out.is_symlink():
        raise errors.ConfigError(f"{out} is a symbolic link: export to the directory it points at")
    if out.exists() and not (out.is_dir() and ((out / MANIFEST_FILE).exists() or not any(out.iterdir()))):
        raise errors.ConfigError(f"{out} exists and is not a soundarc artifact (no {MANIFEST_FILE}): "
                                 "export replaces only an artifact; choose another output directory")
    if out.is_dir() and (foreign := sorted(e.name for e in out.iterdir() if not _artifact_entry(e.name))):
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise errors.ConfigError(f"{out} holds what is not the artifact's ({shown}): export replaces the whole "
                                 "directory; move them out or choose another output directory")
    target = out.resolve()
    for source in sources:
        if target == source.resolve() or target in source.resolve().parents:
            raise errors.ConfigError(f"{out} holds {source}, which it is exported from: choose another output directory")


def _artifact_entry(name: str) -> bool:
    """A name an artifact directory holds: its files, its enrolled classes (and their lock, and the kept files
    of other models), the temporary files of atomic writes."""
    return (name in {FRONTEND_FILE, LABELS_FILE, MANIFEST_FILE, "openset.json"}
            or (name.startswith("model.") and name.endswith(".onnx"))  # model.onnx and its variants
            or name.startswith(("enrolled.", ".enrolled.", ".manifest.json.", ".openset.json.", ".model.")))


def publish(staging: Path, out: Path) -> None:
    """Put the staged artifact at `out`; an artifact already there is moved aside first and removed only
    once the new one is in place (put back if the new one cannot be). Its enrolled classes are carried over
    under the store's lock, so that a server enrolling meanwhile waits and then writes to the new artifact."""
    if not out.exists():
        staging.rename(out)
        return
    with _store_locked(out):
        _keep_enrolled(out, staging)
        old = Path(tempfile.mkdtemp(prefix=_leftover_prefix(out, "old"), dir=out.parent))
        old.rmdir()  # only its unique name is wanted
        out.rename(old)
        try:
            staging.rename(out)
        except BaseException:  # Ctrl-C or SIGTERM too: the old artifact is put back, never left aside
            old.rename(out)
            raise
    shutil.rmtree(old)


def _leftover_prefix(out: Path, kind: str) -> str:
    """The names of the folders an export makes beside `out` ("export": its staging, "old": the artifact it
    replaces) begin with this."""
    return f".{out.name}-{kind}-"


@contextlib.contextmanager
def export_lock(out: Path):
    """`.OUT.export.lock` beside OUT, held while an export writes it: a second export of the same OUT is
    refused (each would replace the other's work), and leftovers found while it is held are a dead export's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.export.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise errors.ConfigError(f"another soundarc export is writing {out}: wait for it to end") from None
        yield


def sweep_leftovers(out: Path) -> None:
    """What an export killed outright (SIGKILL, a power cut) left beside `out`, found under export_lock: its
    staging folder is deleted; an old artifact it had moved aside is put back where `out` is missing, else
    deleted."""
    for path in sorted(out.parent.iterdir()):
        found = re.fullmatch(rf"\.{re.escape(out.name)}-(export|old)-\w+", path.name)
        if not found or not path.is_dir():
            continue
        if found[1] == "old" and not out.exists():
            path.rename(out)
            log.warning("put %s back: an export killed while it replaced it had left it at %s", out, path)
        else:
            shutil.rmtree(path, ignore_errors=True)
            log.info("removed %s, left by an export that was killed", path)


@contextlib.contextmanager
def _store_locked(out: Path):
    """The enrolled-classes store's exclusive lock (core.classes.ClassStore.update's) in `out`, if it can be
    taken (a directory no server can write to has no enrolments in flight)."""
    try:
        lock = open(out / f"{STORE_FILE}.lock", "a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _keep_enrolled(out: Path, staging: Path) -> None:
    """Users' enrolled classes beside the artifact replaced are carried over, never deleted with it: as
    they are for the same model, else under the old model's id (their prototypes mean nothing to another
    model, whose server would refuse the file); those an earlier export kept so are carried over too."""
    for kept in out.glob("enrolled.*.json"):
        if kept.name != STORE_FILE and not (staging / kept.name).exists():
            shutil.copy2(kept, staging / kept.name)
    if not (out / STORE_FILE).is_file() or (staging / STORE_FILE).exists():
        return
    old_id = json.loads((out / MANIFEST_FILE).read_text())["model_id"]
    same = old_id == json.loads((staging / MANIFEST_FILE).read_text())["model_id"]
    kept = staging / (STORE_FILE if same else f"enrolled.{old_id}.json")
    shutil.copy2(out / STORE_FILE, kept)
    if not same:
        log.warning("kept the enrolled classes of model %s as %s: enrol them again with the new model", old_id, kept.name)


def onnx_to_file(net: InferenceModel, frontend: FrontendConfig, path: Path, opset: int) -> None:
    """Export with a dynamic batch axis; weights inside the single file."""
    example = torch.randn(2, 1, frontend.patch_frames, frontend.n_mels)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        net, (example,), input_names=["logmel"], output_names=["logits", "embedding"],
        opset_version=opset, dynamo=True, dynamic_shapes={"logmel": {0: batch}}, external_data=False,
    )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    written = next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
    if written != opset:  # torch's exporter writes what it supports, whatever was asked (the manifest records it)
        raise errors.ConfigError(f"--opset {opset}: torch's exporter wrote opset {written}; export at opset {written}")


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and activations with float32 inputs and outputs (for CUDA)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():  # it warns for every constant below fp16's range (BatchNorm's eps): expected
        warnings.simplefilter("ignore", UserWarning)
        model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def validation_inputs(frontend: FrontendConfig, normalisation: dict, real_audio: list[Path] | None) -> np.ndarray:
    """(N, 1, T, M) float32: seeded patches at the training statistics, and real clips' patches."""
    rng = np.random.default_rng(0)
    shape = (max(BATCH_SIZES), 1, frontend.patch_frames, frontend.n_mels)
    seeded = rng.normal(normalisation["mean"], normalisation["std"], size=shape).astype(np.float32)
    real = [patches(log_mel(decode(p, frontend.sample_rate), frontend), frontend)[0]
            for p in (real_audio if real_audio is not None else sorted(FIXTURES.glob("*.ogg")))]
    if not real:
        return seeded
    return np.concatenate([seeded, np.concatenate(real)[:, None]])


def check_parity(net: InferenceModel, model_path: Path, inputs: np.ndarray, precision: str, tol: Tolerances) -> ParityReport:
    """Run ONNX Runtime (CPU) and PyTorch on every batch size; collect every failure."""
    report = ParityReport(precision, BATCH_SIZES)
    session = ort.InferenceSession(str(model_path), providers=[report.provider])
    agree, total = 0, 0
    for bs in BATCH_SIZES:
        for start in range(0, len(inputs), bs):
            x = inputs[start : start + bs]
            with torch.no_grad():
                ref_logits, ref_emb = (t.numpy() for t in net(torch.from_numpy(x)))
            logits, emb = session.run(None, {"logmel": x})
            # np.maximum/np.minimum, not max/min: a NaN output must carry into the report and fail it
            report.max_abs_logits = float(np.maximum(report.max_abs_logits, np.abs(logits - ref_logits).max()))
            report.max_abs_embedding = float(np.maximum(report.max_abs_embedding, np.abs(emb - ref_emb).max()))
            cosine = (emb * ref_emb).sum(axis=1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref_emb, axis=1))
            report.min_embedding_cosine = float(np.minimum(report.min_embedding_cosine, cosine.min()))
            agree += int((logits.argmax(1) == ref_logits.argmax(1)).sum())
            total += len(x)
    report.top1_agreement = agree / total
    _collect_failures(report, tol)
    log.info("parity %s: %s", precision, {k: v for k, v in asdict(report).items() if k != "failures"})
    return report


def _collect_failures(r: ParityReport, tol: Tolerances) -> None:
    if r.precision == "fp32":
        checks = [("max |logits diff|", r.max_abs_logits, "<=", tol.max_abs),
                  ("max |embedding diff|", r.max_abs_embedding, "<=", tol.max_abs),
                  ("top-1 agreement", r.top1_agreement, ">=", tol.top1_agreement)]
    else:
        checks = [("min embedding cosine", r.min_embedding_cosine, ">=", tol.fp16_min_cosine),
                  ("top-1 agreement", r.top1_agreement, ">=", tol.fp16_top1_agreement)]
    for name, value, op, limit in checks:
        ok = value <= limit if op == "<=" else value >= limit
        if not ok:
            r.failures.append(f"{r.precision}: {name} is {value:.3g}, expected {op} {limit:g}")


def build_manifest(staging: Path, info: dict, opset: int, reports: list[ParityReport], frontend, fp16: bool) -> dict:
    sha = sha256_file(staging / MODEL_FILE)
    sizes = onnx.load(str(staging / MODEL_FILE)).graph.output
    num_classes, dim = (o.type.tensor_type.shape.dim[1].dim_value for o in sizes)
    manifest = {
        "version": MANIFEST_VERSION,
        "model_id": f"{info['run_id']}-{sha[:8]}",
        "sha256": sha,
        "model_file": MODEL_FILE,
        "opset": opset,
        "input": {"name": "logmel", "shape": ["B", 1, frontend.patch_frames, frontend.n_mels], "dtype": "float32"},
        "outputs": {"logits": ["B", num_classes], "embedding": ["B", dim]},
        "num_classes": num_classes,
        "embedding_dim": dim,
        "files": {name: sha256_file(staging / name) for name in HASHED_FILES},
        "normalisation": info["normalisation"],
        "activity": info.get("activity", ActivityConfig().to_dict()),
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "parity": {r.precision: {k: v for k, v in asdict(r).items() if k not in ("failures", "precision")}
                   for r in reports},
        "training": {"run_id": info["run_id"], "mode": info["mode"], "git_sha": info.get("git_sha"),
                     "metrics": info.get("metrics", {}), "config": info.get("config", {}),
                     **({"ensemble": info["ensemble"]} if "ensemble" in info else {})},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if "pretrained" in info:  # a joint embedding (training.model.InferenceModel)
        pre = info["pretrained"]
        manifest["embedding"] = {"pretrained_share": pre["share"], "cosine": f"{1 - pre['share']:g}·cos(fine-tuned) + "
                                 f"{pre['share']:g}·cos(pre-trained)", "pretrained_encoder": pre}
    if fp16:
        manifest["variants"] = {"fp16": {"file": FP16_FILE, "sha256": sha256_file(staging / FP16_FILE)}}
    return manifest


def smoke_test(out_dir: Path) -> dict:
    """Load the written artifact the way the service does and run one batch."""
    runtime = create_runtime(load_artifact(out_dir), RuntimeConfig(device="cpu"))
    fe = runtime.artifact.frontend
    logits, emb = runtime.run(np.zeros((2, fe.patch_frames, fe.n_mels), np.float32))
    return {"providers": runtime.providers, "logits": logits.shape, "embedding": emb.shape}
