"""`soundarc train eval RUN`: the full evaluation of a run's checkpoint on labelled folds, with plots."""

from __future__ import annotations

import logging
from pathlib import Path

from core.activity import ActivityConfig
from core.artifact import write_json_atomic
from core.errors import ConfigError
from core.features import FrontendConfig
from training.data import load_features, scan_labeled
from training.evaluate import (
    classification_metrics,
    clip_embeddings,
    clip_outputs,
    pair_angles,
    tolerance,
    uniformity,
    window_activity,
)
from training.plots import plot_angles, plot_confusion, plot_curves, plot_projection
from training.provenance import folds_seen
from training.run import load_checkpoint, read_history
from training.setup import pick_device

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str, labeled: str, folds: tuple[int, ...], cache_dir: str, device: str = "auto") -> dict:
    run = Path(run_dir)
    device = pick_device(device)
    model, info = load_checkpoint(run, map_location="cpu")
    model.to(device)
    frontend = FrontendConfig.from_dict(info["frontend"])
    clips, names = scan_labeled(labeled)
    if model.classifier is not None and tuple(info["labels"]) != names:
        raise ConfigError(f"{run} was trained on labels {info['labels']}, the data has {list(names)}")
    chosen = [c for c in clips if c.fold in folds or c.fold is None]  # a folder tree has no folds: all of it
    if not chosen:
        raise ConfigError(f"no clip of {labeled} is in folds {list(folds)}: give --folds (the run validated on "
                          "none, as a final run trained on every fold does)")
    data = load_features(chosen, frontend, cache_dir, names)
    if not len(data):
        raise ConfigError(f"none of the {len(chosen)} clips of {labeled} in folds {list(folds)} could be read")
    logits, h = clip_outputs(model, data, frontend, device)
    labels = data.labels()
    active = window_activity(data, frontend, ActivityConfig.from_dict(info["activity"]))
    embeddings = clip_embeddings(h, active)
    try:
        seen = sorted(folds_seen(info, labeled) & set(folds)) if any(c.fold is not None for c in chosen) else ["all"]
    except ConfigError as e:  # a run it learnt from cannot be read: whether these figures are held out is unknown
        log.warning("%s", e)
        seen = ["unknown"]
    if seen:  # said in the result, not only in the log: these figures are not held out
        log.warning("%s learnt from folds %s of these clips: their figures are training figures", run, seen)
    result = {"run_id": info["run_id"], "folds": list(folds), "learnt_from": seen, "clips": len(data),
              "uniformity": uniformity(embeddings), "tolerance": tolerance(embeddings, labels)}
    if logits is not None:
        result.update(classification_metrics(logits, labels, names, active))
    write_json_atomic(run / "eval.json", result)

    plots = run / "plots"
    plot_curves(read_history(run), plots / "curves.png")
    plot_projection(embeddings, labels, names, plots / "embedding_pca.png")
    plot_angles(*pair_angles(embeddings, labels), plots / "pair_angles.png", info["config"].get("margin"))
    if logits is not None:
        plot_confusion(result["confusion"], names, plots / "confusion.png")
    return result

