"""Evaluation: clip and patch accuracy, balanced accuracy, per-class recall, confusion matrix,
the kNN monitor, and the paper's uniformity and tolerance of the embeddings."""

from __future__ import annotations

import numpy as np
import torch

from core.activity import ActivityConfig, voting_windows, window_activity_of
from core.answer import softmax
from core.features import FrontendConfig, patches
from training.data import ClipSet


@torch.no_grad()
def clip_outputs(
    model, clipset: ClipSet, frontend: FrontendConfig, device, batch_size: int = 256
) -> tuple[list[np.ndarray] | None, list[np.ndarray]]:
    """Every evaluation patch (hop eval_hop_frames) of every clip through the model.

    Returns per clip: patch logits (n_i, C) (None without a classifier) and patch h (n_i, D).
    """
    was_training = model.training
    model.eval()
    per_clip = [patches(f, frontend)[0] for f in clipset.features]  # [(n_i, T, M)]
    counts = [len(p) for p in per_clip]
    stacked = torch.from_numpy(np.concatenate(per_clip))[:, None]  # (N, 1, T, M)
    hs, logits = [], []
    for i in range(0, len(stacked), batch_size):
        h = model.encoder(stacked[i : i + batch_size].to(device))  # (b, D)
        hs.append(h.float().cpu())
        if model.classifier is not None:
            logits.append(model.classifier(h).float().cpu())
    model.train(was_training)
    splits = np.cumsum(counts)[:-1]
    h_per_clip = np.split(torch.cat(hs).numpy(), splits)
    logits_per_clip = np.split(torch.cat(logits).numpy(), splits) if logits else None
    return logits_per_clip, h_per_clip


def clip_embeddings(h_per_clip: list[np.ndarray], active_per_clip: list[np.ndarray] | None = None) -> np.ndarray:
    """Mean of L2-normalised patch embeddings (those with sound, when given), renormalised: (N_clips, D)."""
    if active_per_clip is not None:
        h_per_clip = [h[voting_windows(a)] for h, a in zip(h_per_clip, active_per_clip)]
    means = np.stack([_l2(h).mean(axis=0) for h in h_per_clip])
    return _l2(means)


def window_activity(clipset: ClipSet, frontend: FrontendConfig, activity: ActivityConfig) -> list[np.ndarray]:
    """Per clip, (n_i,) bool: which evaluation windows hold sound (as the service decides)."""
    return [window_activity_of(f, frontend, activity) for f in clipset.features]


def classification_metrics(logits_per_clip: list[np.ndarray], labels: np.ndarray, label_names,
                           active_per_clip: list[np.ndarray] | None = None) -> dict:
    """Clip accuracy (mean softmax over the windows with sound, as the service answers; all windows
    of a clip with none), balanced accuracy, the paper's patch-weighted accuracy (windows with
    sound), per-class recall and the confusion matrix (rows true, columns predicted)."""
    probs = [softmax(x) for x in logits_per_clip]
    if active_per_clip is not None:
        probs = [p[voting_windows(a)] for p, a in zip(probs, active_per_clip)]
    clip_pred = np.array([p.mean(axis=0).argmax() for p in probs])
    patch_correct = np.concatenate([p.argmax(axis=1) == y for p, y in zip(probs, labels)])
    n = len(label_names)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (labels, clip_pred), 1)
    support = confusion.sum(axis=1)
    recall = np.divide(np.diag(confusion), support, out=np.zeros(n), where=support > 0)
    return {
        "clip_accuracy": float((clip_pred == labels).mean()),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "patch_accuracy": float(patch_correct.mean()),
        "per_class_recall": {name: float(r) for name, r in zip(label_names, recall)},
        "confusion": confusion.tolist(),
        "predictions": clip_pred.tolist(),
    }


def validation_summary(model, clipset: ClipSet, frontend: FrontendConfig, activity: ActivityConfig, device) -> dict:
    logits, _ = clip_outputs(model, clipset, frontend, device)
    m = classification_metrics(logits, clipset.labels(), clipset.label_names, window_activity(clipset, frontend, activity))
    return {"val_clip_accuracy": m["clip_accuracy"], "val_balanced_accuracy": m["balanced_accuracy"],
            "val_patch_accuracy": m["patch_accuracy"]}


def knn_accuracy(bank: np.ndarray, bank_labels: np.ndarray, query: np.ndarray, query_labels: np.ndarray, k: int) -> float:
    """Cosine kNN, votes weighted by similarity; embeddings are L2-normalised (N, D)."""
    sims = query @ bank.T  # (Q, N)
    k = min(k, len(bank))
    nearest = np.argsort(-sims, axis=1)[:, :k]  # (Q, k)
    n_classes = int(max(bank_labels.max(), query_labels.max())) + 1
    votes = np.zeros((len(query), n_classes))
    for j in range(k):
        np.add.at(votes, (np.arange(len(query)), bank_labels[nearest[:, j]]), sims[np.arange(len(query)), nearest[:, j]])
    return float((votes.argmax(axis=1) == query_labels).mean())


def uniformity(embeddings: np.ndarray, t: float = 2.0) -> float:
    """Wang & Isola: log mean_{i≠j} exp(−t·‖x_i − x_j‖²) over L2-normalised (N, D); lower is more uniform."""
    x = _l2(embeddings).astype(np.float64)
    sq = np.clip(2 - 2 * x @ x.T, 0, None)
    off = ~np.eye(len(x), dtype=bool)
    return float(np.log(np.exp(-t * sq[off]).mean()))


def tolerance(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Wang & Liu: mean cosine similarity of same-class pairs (i≠j); higher is more tolerant."""
    x = _l2(embeddings).astype(np.float64)
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(x), dtype=bool)
    return float((x @ x.T)[same].mean())


def pair_angles(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angles (radians) of positive (same label) and negative pairs, i < j."""
    x = _l2(embeddings).astype(np.float64)
    theta = np.arccos(np.clip(x @ x.T, -1, 1))
    upper = np.triu(np.ones_like(theta, dtype=bool), k=1)
    same = labels[:, None] == labels[None, :]
    return theta[upper & same], theta[upper & ~same]


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

