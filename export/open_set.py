"""Attach open-set rejection to an artifact: class prototypes from the run's training clips, the map
from cosine to the head's logit (for enrolled classes), and the "unknown" threshold.
Embeddings come from the exported ONNX model through the service's own path (decode, log-mel,
windows, activity), so they are the embeddings the service will compare.

The threshold comes, best, from cross-validation (`calibration`: a JSON file written by
benchmarks/openset_cv.py with `threshold_rad`, `frr`, `calibrated_on`): the angles of held-out
folds to prototypes of the other folds. Without it: the calibration folds given, else the training
clips themselves (then the threshold is tighter than on new audio: the real false-rejection rate is
higher than `frr`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from core import errors
from core.activity import voting_windows
from core.answer import clip_embedding
from core.artifact import MANIFEST_FILE, Artifact, check_open_set, load_artifact, sha256_file, write_json_atomic
from core.clip import prepare
from core.openset import ENROL_MARGIN, OpenSet, calibrate, class_prototypes, fit_cosine_logit, threshold_ok
from core.runtime import RuntimeConfig, create_runtime
from training.data import scan_labeled

log = logging.getLogger(__name__)
OPENSET_FILE = "openset.json"


def window_outputs(runtime, paths: list[Path]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per file, the (logits, embeddings) of its windows with sound (all windows when none)."""
    artifact = runtime.artifact
    out = []
    for path in paths:
        clip = prepare(path, artifact.frontend, artifact.activity)
        logits, embeddings = runtime.run(clip.patches)
        keep = voting_windows(clip.active)
        out.append((logits[keep], embeddings[keep]))
    return out


def clip_embeddings(runtime, paths: list[Path]) -> np.ndarray:
    """(N, D) clip embeddings of audio files, as the service computes them."""
    return embeddings_of(window_outputs(runtime, paths))


def embeddings_of(outputs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per clip its windows' (logits, embeddings) -> (K, D) the clip embeddings."""
    return np.stack([clip_embedding(e) for _, e in outputs])


def fit_builtin(outputs: list[tuple[np.ndarray, np.ndarray]], labels: np.ndarray, n_classes: int):
    """Per training clip its windows' (logits (N, C), embeddings (N, D)) and (K,) labels -> the clip
    embeddings (K, D), the class prototypes (C, D) and the cosine-logit line (a, b) over every window."""
    clip_emb = embeddings_of(outputs)
    prototypes = class_prototypes(clip_emb, labels, n_classes)
    logits, embeddings = (np.concatenate(x) for x in zip(*outputs))
    return clip_emb, prototypes, fit_cosine_logit(logits, embeddings @ prototypes.T)


def readable_outputs(runtime, clips: list) -> tuple[list, list[tuple[np.ndarray, np.ndarray]]]:
    """The clips that decode and their window_outputs; unreadable ones are skipped and said, as training
    skips them (training.data), so one bad file of a training set does not stop an export."""
    kept, outputs = [], []
    for clip in clips:
        try:
            outputs += window_outputs(runtime, [clip.path])
        except (errors.BadAudio, errors.TooLarge, OSError) as e:
            log.warning("open set: skipping %s: %s", clip.path, e)
            continue
        kept.append(clip)
    if not kept:
        raise errors.ConfigError(f"none of the {len(clips)} clips for the open set could be read")
    return kept, outputs


def read_calibration(path: str, artifact: Artifact) -> dict:
    """The threshold file of benchmarks/openset_cv.py, refused if it was measured on another embedding
    (an angle in the joint embedding means nothing in the fine-tuned one alone) or for other classes."""
    try:
        c = json.loads(Path(path).read_text())
        c = {**c, "threshold_rad": float(c["threshold_rad"]), "frr": float(c["frr"]), "calibrated_on": str(c["calibrated_on"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise errors.ConfigError(f"--calibration {path}: not a threshold file of benchmarks/openset_cv.py ({e!r})") from None
    if not threshold_ok(c["threshold_rad"]) or not 0.0 <= c["frr"] <= 1.0:
        raise errors.ConfigError(f"--calibration {path}: threshold {c['threshold_rad']!r} rad and false-rejection rate "
                                 f"{c['frr']!r}: the threshold must be an angle in (0, π] (radians) and the rate in [0, 1]")
    per_class = c.get("class_thresholds_rad", {})
    if not isinstance(per_class, dict) or (per_class and sorted(per_class) != sorted(artifact.labels)) \
            or not all(isinstance(t, (int, float)) and threshold_ok(float(t)) for t in per_class.values()):
        raise errors.ConfigError(f"--calibration {path}: class_thresholds_rad must give every class of the model "
                                 f"({', '.join(artifact.labels)}) an angle in (0, π] (radians)")
    c["class_thresholds_rad"] = tuple(float(per_class[name]) for name in artifact.labels) if per_class else ()  # model order
    share = artifact.manifest.get("embedding", {}).get("pretrained_share", 0.0)
    if "pretrained_share" in c and abs(float(c["pretrained_share"]) - share) > 1e-9:
        raise errors.ConfigError(f"--calibration {path} was measured with the pre-trained encoder at share "
                                 f"{c['pretrained_share']:g}, the artifact's embedding has share {share:g}: "
                                 "export with the same --pretrained-share")
    return c


def attach_open_set(artifact_dir: str | Path, labeled: str, train_folds: tuple[int, ...],
                    calibration_folds: tuple[int, ...] = (), frr: float = 0.05, calibration: str | None = None,
                    enrol_margin: float = ENROL_MARGIN, prototype_weight: float = 0.0,
                    temperature: float = 1.0, vote: str = "mean", enrol_gate: str = "window") -> OpenSet:
    artifact = load_artifact(artifact_dir)
    clips, names = scan_labeled(labeled)
    if names != artifact.labels:
        raise errors.ConfigError(f"{labeled} has labels {list(names)}, the model {list(artifact.labels)}")
    calibrated = read_calibration(calibration, artifact) if calibration else None
    runtime = create_runtime(artifact, RuntimeConfig(device="cpu", precision="fp32"))  # never an int8 variant beside it
    index = {name: i for i, name in enumerate(names)}
    train, outputs = readable_outputs(runtime, [c for c in clips if c.fold is None or c.fold in train_folds])
    train_emb, prototypes, cosine_logit = fit_builtin(outputs, np.array([index[c.label] for c in train]), len(names))

    if calibrated:
        open_set = OpenSet(prototypes, names, calibrated["threshold_rad"], calibrated["frr"], calibrated["calibrated_on"],
                           cosine_logit, enrol_margin, prototype_weight, temperature, vote, calibrated["class_thresholds_rad"],
                           enrol_gate=enrol_gate)
    else:
        calib_emb = train_emb
        if calibration_folds:
            calib_emb = embeddings_of(readable_outputs(runtime, [c for c in clips if c.fold in calibration_folds])[1])
        where = f"folds {list(calibration_folds)}" if calibration_folds else f"the training clips (folds {list(train_folds)})"
        threshold = calibrate(prototypes, calib_emb, frr)
        open_set = OpenSet(prototypes, names, threshold, frr, where, cosine_logit, enrol_margin, prototype_weight,
                           temperature, vote, enrol_gate=enrol_gate)
    if cosine_logit[0] <= 0:
        log.warning("the head's logits do not rise with the cosine to the class prototypes (slope %.3g): enrolled classes "
                    "will not rank sensibly beside the model's (an untrained model?)", cosine_logit[0])
    log.info("open set: threshold %.3f rad (frr %.2f, %s); prototype logits %.2f·cos + %.2f, weight %g; temperature %g; "
             "%s vote", open_set.threshold_rad, open_set.frr, open_set.calibrated_on, *cosine_logit, prototype_weight,
             temperature, vote)
    return save_open_set(artifact_dir, open_set)


def save_open_set(artifact_dir: str | Path, open_set: OpenSet) -> OpenSet:
    """Write openset.json and record its sha256 in the manifest (the model's own hash is untouched)."""
    root = Path(artifact_dir)
    artifact = load_artifact(root)
    manifest = artifact.manifest
    check_open_set(open_set, artifact.labels, manifest)
    write_json_atomic(root / OPENSET_FILE, open_set.to_dict())
    manifest["openset"] = {"file": OPENSET_FILE, "sha256": sha256_file(root / OPENSET_FILE), "frr": open_set.frr,
                           "threshold_rad": open_set.threshold_rad, "calibrated_on": open_set.calibrated_on}
    if open_set.class_thresholds_rad:
        manifest["openset"]["class_thresholds_rad"] = dict(zip(open_set.labels, open_set.class_thresholds_rad, strict=True))
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return load_artifact(root).open_set
