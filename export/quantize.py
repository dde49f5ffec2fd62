"""`soundarc quantize ARTIFACT --audio CLIPS...`: an int8 variant of an artifact, for CPUs.

    fp32 model.onnx ─▶ quant_pre_process (graph optimisation)
                    ─▶ quantize_static: QDQ, int8 weights per output channel, uint8 activations
                       (U8S8: the fast path of x86 CPUs; S8S8 was slower than fp32),
                       ranges calibrated on real windows (the windows with sound of the given clips);
                       weights in 7 bits (reduce_range: ONNX Runtime's advice against U8S8 saturation
                       on x86 CPUs without VNNI); the stem convolutions that read the log-mel stay fp32
                       with what follows them up to the first quantized convolution (ReLU, max-pooling;
                       quantizing them made most of the int8 model's error; with the runtime's
                       INT8_DISABLED_OPTIMIZERS they cost no speed; BENCHMARKS.md)
                    ─▶ validation against fp32 on the same clips, through core.answer: window top-1
                       agreement, embedding cosine, clip label, first class and "unknown", accuracy when labelled
                    ─▶ model.int8.onnx + `variants.int8` in the manifest (sha256, validation), written
                       only when the contract holds

The variant keeps the model id (its answers are the fp32 model's, within the contract): enrolled
classes and indexes stay valid. The runtime picks it on a CPU (precision "auto", SOUNDARC_PRECISION);
GPUs keep fp32. Dynamic quantization is not offered: it slows convolutional networks. Torch-free.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from core import errors
from core.activity import voting_windows
from core.answer import AnswerOptions, answer
from core.artifact import MANIFEST_FILE, load_artifact, sha256_file, write_json_atomic
from core.audio import AUDIO_SUFFIXES
from core.classes import ClassSet
from core.clip import prepare
from core.runtime import RuntimeConfig, create_runtime
from soundarc.cli import at_least

log = logging.getLogger(__name__)
INT8_FILE = "model.int8.onnx"
CONTRACT = {"min_embedding_cosine_p01": 0.99, "min_window_top1_agreement": 0.97, "min_clip_label_agreement": 0.98,
            "max_accuracy_drop": 0.005}


def add_arguments(parser) -> None:
    parser.add_argument("artifact", help="the artifact directory to add the int8 variant to (e.g. models/default)")
    parser.add_argument("--audio", nargs="+", required=True,
                        help="real clips (files or folders) to calibrate on and validate with; in the ESC-50 "
                             "layout (audio/ + meta/*.csv) the clip accuracy is compared too")
    parser.add_argument("--max-calibration-windows", type=at_least(1), default=2000, help="windows used for the ranges")


def run(args) -> int:
    report = quantize_artifact(args.artifact, [Path(a) for a in args.audio], args.max_calibration_windows)
    print(json.dumps(report, indent=2))
    return 0


def quantize_artifact(artifact_dir: str | Path, audio: list[Path], max_windows: int = 2000) -> dict:
    """Add (or replace) the int8 variant of an artifact; returns its manifest entry."""
    root = Path(artifact_dir)
    fp32 = load_artifact(root)
    clips = _clips(audio)
    prepared = [_prepare(path, fp32) for path, _ in clips]
    calibration = calibration_windows(prepared, max_windows)
    target, staging = root / INT8_FILE, root / f".{INT8_FILE}.tmp"
    started = time.perf_counter()
    try:
        quantize_model(fp32.model_path, staging, calibration)
        seconds = time.perf_counter() - started
        int8 = create_runtime(with_variant(fp32, staging), RuntimeConfig(device="cpu", precision="int8"))
        validation = validate(create_runtime(fp32, RuntimeConfig(device="cpu", precision="fp32")), int8, prepared,
                              [label for _, label in clips])
        failures = [k for k, ok in _contract(validation).items() if not ok]
        if failures:
            raise errors.ExportValidationError(f"the int8 model misses its contract ({CONTRACT}) on {', '.join(failures)}: "
                                               f"{validation}")
        _drop_int8_entry(root)  # a stop from here until the new entry is written leaves no variant, not a wrong sha256
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
    entry = {"file": INT8_FILE, "sha256": sha256_file(target),
             "format": "QDQ, int8 weights (7 bits) per output channel, uint8 activations, "
                       "the stem convolutions fp32 (ONNX Runtime static quantization)",
             "calibration": {"clips": len(clips), "windows": len(calibration), "method": "MinMax"},
             "validation": validation, "contract": CONTRACT, "seconds": round(seconds, 1), "onnxruntime": ort.__version__}
    manifest = load_artifact(root).manifest
    manifest.setdefault("variants", {})["int8"] = entry
    write_json_atomic(root / MANIFEST_FILE, manifest)
    load_artifact(root)  # still whole
    return {"artifact": str(root), "model_id": fp32.model_id, "int8": entry}


def _drop_int8_entry(root: Path) -> None:
    manifest = load_artifact(root).manifest
    if manifest.get("variants", {}).pop("int8", None) is not None:
        write_json_atomic(root / MANIFEST_FILE, manifest)


def calibration_windows(prepared: list, max_windows: int = 2000) -> np.ndarray:
    """(N <= max_windows, mels, frames): a fixed random draw of the windows with sound of prepared clips
    (all of a clip's windows where none has sound)."""
    if not any(c.active.any() for c in prepared):  # silence would calibrate every range to nothing
        raise errors.ConfigError("no --audio clip holds sound (every window is below the activity thresholds): "
                                 "calibrate on clips like those the model will answer")
    windows = np.concatenate([c.patches[voting_windows(c.active)] for c in prepared])
    return windows[np.random.default_rng(0).permutation(len(windows))[:max_windows]]


def with_variant(artifact, path: Path):
    """The artifact with `path` as its int8 variant (in memory), to run it before it is written."""
    variants = {**artifact.manifest.get("variants", {}), "int8": {"file": path.name, "sha256": sha256_file(path)}}
    return replace(artifact, manifest={**artifact.manifest, "variants": variants})


class _Windows(CalibrationDataReader):
    def __init__(self, input_name: str, windows: np.ndarray, batch: int = 64):
        self.batches = iter([{input_name: windows[i:i + batch, None].astype(np.float32)}
                             for i in range(0, len(windows), batch)])

    def get_next(self):
        return next(self.batches, None)


def quantize_model(src: Path, dst: Path, calibration: np.ndarray, stem_fp32: bool = True,
                   reduce_range: bool = True) -> None:
    """The int8 QDQ model of `src` at `dst`, its activation ranges (MinMax) from `calibration`: (N, mels, frames).
    stem_fp32: the stem convolutions left fp32; reduce_range: 7-bit weights (the defaults ship)."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)  # its symbolic pass fails on Expand
        input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        fp32_nodes = stem_convs(onnx.load(str(prepared)).graph) if stem_fp32 else []
        quantize_static(str(prepared), str(dst), _Windows(input_name, calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=fp32_nodes)


def stem_convs(graph) -> list[str]:
    """The names of the convolutions that read the model's input (through its normalisation), before any
    other convolution: one per encoder."""
    readers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    stems, seen, tensors = [], set(), [i.name for i in graph.input]
    while tensors:
        for node in readers[tensors.pop()]:
            if node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                stems.append(node.name)
            else:
                tensors.extend(node.output)
    return stems


def validate(fp32, int8, prepared: list, labels: list[str | None]) -> dict:
    """The int8 runtime against the fp32 one (of the same artifact) on the same prepared clips."""
    runtimes, artifact = (fp32, int8), fp32.artifact
    classes = None if artifact.open_set is None else ClassSet.of(artifact)
    agree, cosines, same_label, same_top1, same_unknown, correct = [], [], [], [], [], [[], []]
    for clip, label in zip(prepared, labels):
        outputs = [rt.run(clip.patches) for rt in runtimes]  # [(logits, embeddings)] fp32, int8
        (l32, e32), (l8, e8) = outputs
        agree.append((l32.argmax(axis=1) == l8.argmax(axis=1))[clip.active])  # silent windows have no answer
        cosines.append(np.einsum("nd,nd->n", _unit(e32), _unit(e8)))
        answers = [answer(lg, e, clip.active, clip.starts_s, artifact.frontend.patch_seconds, artifact.labels, classes,
                          AnswerOptions(), clip.levels, artifact.frontend) for lg, e in outputs]  # as served
        same_label.append(answers[0].label == answers[1].label)
        top1 = [a.ranking[0][0] if a.ranking else None for a in answers]  # answered or not
        same_top1.append(top1[0] == top1[1])
        same_unknown.append((answers[0].open_set or {}).get("unknown") == (answers[1].open_set or {}).get("unknown"))
        if label is not None:
            for i, t in enumerate(top1):
                correct[i].append(t == label)
    cosines = np.concatenate(cosines)
    out = {"clips": len(prepared), "windows": int(len(cosines)),
           "window_top1_agreement": float(np.concatenate(agree).mean()),  # over the windows with sound
           "embedding_cosine_mean": float(cosines.mean()), "embedding_cosine_p01": float(np.percentile(cosines, 1)),
           "clip_label_agreement": float(np.mean(same_label)), "clip_unknown_agreement": float(np.mean(same_unknown)),
           "clip_top1_agreement": float(np.mean(same_top1))}
    if correct[0]:
        out.update(accuracy_fp32=float(np.mean(correct[0])), accuracy_int8=float(np.mean(correct[1])),
                   labelled_clips=len(correct[0]))
    return out


def _contract(v: dict) -> dict:
    checks = {"embedding_cosine_p01": v["embedding_cosine_p01"] >= CONTRACT["min_embedding_cosine_p01"],
              "window_top1_agreement": v["window_top1_agreement"] >= CONTRACT["min_window_top1_agreement"],
              "clip_label_agreement": v["clip_label_agreement"] >= CONTRACT["min_clip_label_agreement"]}
    if "accuracy_fp32" in v:
        checks["accuracy_drop"] = v["accuracy_fp32"] - v["accuracy_int8"] <= CONTRACT["max_accuracy_drop"]
    return checks


def _clips(audio: list[Path]) -> list[tuple[Path, str | None]]:
    """(path, label or None) of every audio file under `audio`; labels from an ESC-50 layout."""
    out = []
    for root in audio:
        metas = sorted((root / "meta").glob("*.csv")) if root.is_dir() else []
        if metas:  # ESC-50 layout: meta/<name>.csv with filename and category columns
            with open(metas[0], newline="") as f:
                out += [(root / "audio" / r["filename"], r["category"]) for r in csv.DictReader(f)]
        elif root.is_dir():
            out += [(p, None) for p in sorted(root.rglob("*")) if p.suffix.lower() in AUDIO_SUFFIXES]
        else:
            out.append((root, None))
    if not out:
        raise errors.ConfigError(f"no audio under {[str(a) for a in audio]} to calibrate on")
    return out


def _prepare(path: Path, artifact):
    """One calibration clip, its errors naming it."""
    try:
        return prepare(path, artifact.frontend, artifact.activity)
    except errors.SoundarcError as e:
        raise type(e)(f"{path}: {e}") from e


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
