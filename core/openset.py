"""Open-set rejection: a clip farther than a calibrated angle from every class prototype is "unknown".

    prototypes  (C, D) mean L2-normalised clip embedding of each class's training clips, renormalised
    threshold   the angle (rad) below which a stated fraction (1 − frr) of known calibration clips fall
                from their nearest prototype: their false-rejection rate is `frr` by construction

Stored in the artifact as `openset.json` (its sha256 in the manifest). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class OpenSet:
    prototypes: np.ndarray  # (C, D) float32, L2-normalised rows
    labels: tuple[str, ...]
    threshold_rad: float
    frr: float
    calibrated_on: str

    def nearest(self, embedding: np.ndarray) -> tuple[int, float]:
        """(D,) L2-normalised clip embedding -> (index of the nearest prototype, its angle in rad)."""
        cos = np.clip(self.prototypes @ embedding.astype(np.float32), -1.0, 1.0)  # (C,)
        best = int(np.argmax(cos))
        return best, float(np.arccos(cos[best]))

    def decide(self, embedding: np.ndarray) -> dict:
        """JSON-ready verdict for one clip."""
        index, angle = self.nearest(embedding)
        return {"unknown": angle > self.threshold_rad, "nearest_label": self.labels[index],
                "angle_rad": round(angle, 6), "threshold_rad": round(self.threshold_rad, 6)}

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "prototypes": self.prototypes.tolist(), "threshold_rad": self.threshold_rad,
                "frr": self.frr, "calibrated_on": self.calibrated_on}

    @classmethod
    def from_dict(cls, d: dict) -> OpenSet:
        return cls(np.asarray(d["prototypes"], dtype=np.float32), tuple(d["labels"]), float(d["threshold_rad"]),
                   float(d["frr"]), d["calibrated_on"])


def class_prototypes(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, D) clip embeddings and (N,) labels -> (C, D) renormalised class means."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(n_classes)])
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def calibrate(prototypes: np.ndarray, embeddings: np.ndarray, frr: float) -> float:
    """The angle that rejects a fraction `frr` of the known calibration clips (N, D)."""
    cos = np.clip(embeddings @ prototypes.T, -1.0, 1.0).max(axis=1)  # nearest prototype, (N,)
    return float(np.quantile(np.arccos(cos), 1.0 - frr))


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that an unknown clip scores higher (farther) than a known one (ties count half)."""
    k, u = np.asarray(known_scores)[:, None], np.asarray(unknown_scores)[None, :]
    return float((u > k).mean() + 0.5 * (u == k).mean())
