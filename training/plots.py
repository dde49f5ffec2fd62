"""Plots people would rather see than read: curves, confusion matrix, embedding map, pair angles."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], path: Path) -> None:
    """Loss and every accuracy-like metric against the epoch."""
    epochs = [r["epoch"] for r in history]
    scores = sorted({k for r in history for k in r if "accuracy" in k})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    axes[0].plot(epochs, [r["loss"] for r in history])
    axes[0].set(xlabel="epoch", ylabel="loss", title="training loss")
    for key in scores:
        points = [(r["epoch"], r[key]) for r in history if key in r]
        axes[1].plot(*zip(*points), marker="o", label=key)
    axes[1].set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="validation")
    if scores:
        axes[1].legend()
    _save(fig, path)


def plot_confusion(confusion: np.ndarray, names, path: Path) -> None:
    confusion = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    for (i, j), v in np.ndenumerate(confusion):
        if v:
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > confusion.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion (clips)")
    _save(fig, path)


def plot_projection(embeddings: np.ndarray, labels: np.ndarray, names, path: Path) -> None:
    """The first two principal components of the clip embeddings, coloured by class."""
    centred = embeddings - embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T  # (N, 2)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, name in enumerate(names):
        sel = labels == i
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=14, label=name, color=plt.cm.tab10(i % 10))
    ax.legend(fontsize=7, markerscale=1.2, loc="best")
    ax.set(title="clip embeddings (PCA)", xticks=[], yticks=[])
    _save(fig, path)


def plot_angles(positive: np.ndarray, negative: np.ndarray, path: Path, margin: float | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, np.pi, 61)
    ax.hist(negative, bins=bins, density=True, alpha=0.6, label=f"different class ({len(negative)})")
    ax.hist(positive, bins=bins, density=True, alpha=0.6, label=f"same class ({len(positive)})")
    if margin is not None:
        ax.axvline(margin, color="k", linestyle="--", linewidth=1, label=f"margin {margin} rad")
    ax.set(xlabel="angle between clip embeddings (rad)", ylabel="density", title="pair angles")
    ax.legend()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
