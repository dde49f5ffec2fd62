"""Attach open-set rejection to an artifact: class prototypes from the run's training clips and a
threshold calibrated for a stated false-rejection rate. Embeddings come from the exported ONNX
model through the service's own path (decode, log-mel, windows, mean embedding), so they are the
embeddings the service will compare.

Calibration clips: the folds given, else the training clips themselves (then the threshold is
tighter than on new audio: the real false-rejection rate is higher than `frr`; measure it with
benchmarks/openset_bench.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from core import errors
from core.artifact import MANIFEST_FILE, load_artifact, sha256_file, write_json_atomic
from core.clip import clip_embedding, prepare
from core.openset import OpenSet, calibrate, class_prototypes
from core.runtime import RuntimeConfig, create_runtime
from training.data import scan_labeled

log = logging.getLogger(__name__)
OPENSET_FILE = "openset.json"


def clip_embeddings(runtime, paths: list[Path]) -> np.ndarray:
    """(N, D) clip embeddings of audio files, as the service computes them."""
    fe = runtime.artifact.frontend
    return np.stack([clip_embedding(runtime.run(prepare(p, fe).patches)[1]) for p in paths])


def attach_open_set(artifact_dir: str | Path, labeled: str, train_folds: tuple[int, ...],
                    calibration_folds: tuple[int, ...] = (), frr: float = 0.05) -> OpenSet:
    artifact = load_artifact(artifact_dir)
    clips, names = scan_labeled(labeled)
    if names != artifact.labels:
        raise errors.ConfigError(f"{labeled} has labels {list(names)}, the model {list(artifact.labels)}")
    train = [c for c in clips if c.fold is None or c.fold in train_folds]
    calib = [c for c in clips if c.fold in calibration_folds] if calibration_folds else train
    runtime = create_runtime(artifact, RuntimeConfig(device="cpu"))
    index = {name: i for i, name in enumerate(names)}
    train_emb = clip_embeddings(runtime, [c.path for c in train])
    prototypes = class_prototypes(train_emb, np.array([index[c.label] for c in train]), len(names))
    calib_emb = train_emb if calib is train else clip_embeddings(runtime, [c.path for c in calib])
    where = f"folds {list(calibration_folds)}" if calibration_folds else f"the training clips (folds {list(train_folds)})"
    open_set = OpenSet(prototypes, names, calibrate(prototypes, calib_emb, frr), frr, where)
    log.info("open set: threshold %.3f rad for a false-rejection rate of %.2f on %s", open_set.threshold_rad, frr, where)
    return save_open_set(artifact_dir, open_set)


def save_open_set(artifact_dir: str | Path, open_set: OpenSet) -> OpenSet:
    """Write openset.json and record its sha256 in the manifest (the model's own hash is untouched)."""
    root = Path(artifact_dir)
    manifest = load_artifact(root).manifest
    write_json_atomic(root / OPENSET_FILE, open_set.to_dict())
    manifest["openset"] = {"file": OPENSET_FILE, "sha256": sha256_file(root / OPENSET_FILE), "frr": open_set.frr,
                           "threshold_rad": open_set.threshold_rad, "calibrated_on": open_set.calibrated_on}
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return load_artifact(root).open_set
