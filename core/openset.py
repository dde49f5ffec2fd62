"""Open-set rejection: a clip far from every class prototype is "unknown".

    prototypes    (C, D) mean L2-normalised clip embedding of each class's training clips, renormalised
    threshold     the angle (rad) below which a stated fraction (1 − frr) of known calibration clips
                  fall from their nearest prototype: their false-rejection rate is `frr` by construction
    class thresholds  optionally one such angle per built-in class, of the known clips nearest to it (the
                  one threshold serves enrolled classes and models without them; benchmarks/openset_cv.py
                  --per-class: fewer unknown sounds accepted at the same false-rejection rate)
    cosine_logit  (a, b): the head's logit of a class ≈ a·cos(h, its prototype) + b, fitted on the
                  training windows; its slope a puts enrolled classes on the head's scale (core.answer)
    enrol_margin  how much closer (in cosine) a window must be to an enrolled prototype than to the
                  prototype of the top built-in class for the enrolled class to win (benchmarks/enrol_cost.py)
    one_shot_margin  optionally the margin of a class enrolled from one clip, whose prototype lies further from
                  its class's other clips than a mean of several does (benchmarks/enrol_bench.py); from 1 to 5
                  clips the margin runs linearly in 1/n to enrol_margin, which holds from 5 (margin_for)
    enrol_gate    where an enrolled class is answered: "window" (in the windows it wins by its margin, as
                  above) or "clip" (also for a clip whose embedding lies nearer its prototype than any built-in
                  one, by its margin where positive: core.answer.clip_gate; benchmarks/enrol_cost.py --clip-gate)
    prototype_weight  w: the built-in classes' logits are (1 − w)·head + w·(a·cos + b), the head's
                  blended with the prototypes' on its scale (core.answer; benchmarks/fusion_cv.py); 0: the head
    temperature   T: the served probabilities p become p^(1/T), renormalised (a window's: softmax(logits / T);
                  a clip's after its windows are averaged), so that the scores are calibrated without any
                  order changing (core.answer.sharpen; fitted by cross-validation: benchmarks/calibration_cv.py)
    vote          how a clip's windows with sound make its ranking: "mean" (each the same) or "amplitude"
                  (each weighted by the square root of its mean frame power, so that under a steady
                  background the windows that hold the sound outweigh those of the background alone;
                  core.answer.vote_weights; chosen by benchmarks/vote_cv.py)

Stored in the artifact as `openset.json` (its sha256 in the manifest). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import errors

# What export gives new artifacts unless told otherwise. It depends on how tightly the model packs a
# class: measure it per model with benchmarks/enrol_cost.py (0.05 for the cross-entropy recipe, 0.0 for
# the ACL one and for the shipped model at prototype weight 0.5, as its openset.json holds;
# benchmarks/finalise_default.py applies the rule). Older artifacts: 0.0.
ENROL_MARGIN = 0.05
FULL_SHOTS = 5  # from this many examples an enrolled class takes enrol_margin (benchmarks/enrol_bench.py's 5-shot)
VOTES = ("mean", "amplitude")
GATES = ("window", "clip")


@dataclass(frozen=True)
class OpenSet:
    prototypes: np.ndarray  # (C, D) float32, L2-normalised rows
    labels: tuple[str, ...]
    threshold_rad: float
    frr: float
    calibrated_on: str
    cosine_logit: tuple[float, float] = (20.0, 0.0)  # artifacts written before it was fitted get this
    enrol_margin: float = 0.0
    prototype_weight: float = 0.0  # artifacts written before it: the head alone
    temperature: float = 1.0  # artifacts written before it: the logits as they are
    vote: str = "mean"  # artifacts written before it: every window with sound the same
    class_thresholds_rad: tuple[float, ...] = ()  # (C,) per class, or none: threshold_rad for every class
    one_shot_margin: float | None = None  # a class of one example's margin; None: enrol_margin at any count
    enrol_gate: str = "window"  # artifacts written before it: an enrolled class only where it wins windows

    def __post_init__(self):
        if not threshold_ok(self.threshold_rad):
            raise errors.ArtifactError(f"its threshold {self.threshold_rad!r} rad is no angle in (0, π]")
        if not 0.0 <= self.frr <= 1.0:
            raise errors.ArtifactError(f"its false-rejection rate must be in [0, 1], got {self.frr!r}")
        for margin in (self.enrol_margin, self.one_shot_margin):
            if margin is not None and not -1.0 <= margin <= 1.0:
                raise errors.ArtifactError(f"an enrolment margin must be a cosine difference in [-1, 1], got {margin!r}")
        if len(self.cosine_logit) != 2 or not np.isfinite(np.asarray(self.cosine_logit, dtype=np.float64)).all():
            raise errors.ArtifactError(f"cosine_logit must be two finite numbers (scale, offset), got {self.cosine_logit!r}")
        if not weight_ok(self.prototype_weight):
            raise errors.ArtifactError(f"the prototype weight must be in [0, 1], got {self.prototype_weight}")
        if not temperature_ok(self.temperature):
            raise errors.ArtifactError(f"the temperature must be a positive number, got {self.temperature}")
        if self.vote not in VOTES:
            raise errors.ArtifactError(f"unknown vote {self.vote!r}; valid: {VOTES}")
        if self.enrol_gate not in GATES:
            raise errors.ArtifactError(f"unknown enrolment gate {self.enrol_gate!r}; valid: {GATES}")
        if self.class_thresholds_rad and (len(self.class_thresholds_rad) != len(self.labels)
                                          or not all(threshold_ok(t) for t in self.class_thresholds_rad)):
            raise errors.ArtifactError(f"its thresholds per class must be one angle in (0, π] for each of its "
                                       f"{len(self.labels)} classes, got {self.class_thresholds_rad!r}")

    def threshold_of(self, index: int) -> float:
        """The "unknown" angle of class `index`: its own, where the model has them, else the one."""
        return self.class_thresholds_rad[index] if self.class_thresholds_rad else self.threshold_rad

    def margin_for(self, examples: int) -> float:
        """The enrolment margin of a class enrolled from `examples` clips (its own aside)."""
        if self.one_shot_margin is None or examples >= FULL_SHOTS:
            return self.enrol_margin
        share = (1 / examples - 1 / FULL_SHOTS) / (1 - 1 / FULL_SHOTS)  # 1 for one clip, 0 for FULL_SHOTS
        return self.enrol_margin + share * (self.one_shot_margin - self.enrol_margin)

    def nearest(self, embedding: np.ndarray) -> tuple[int, float]:
        """(D,) L2-normalised clip embedding -> (index of the nearest prototype, its angle in rad)."""
        index, angle = self.nearest_each(embedding[None])
        return int(index[0]), float(angle[0])

    def nearest_each(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, D) L2-normalised embeddings -> (N,) index of each one's nearest prototype, (N,) its angle in rad."""
        cos = np.clip(dot_rows(embeddings.astype(np.float32), self.prototypes), -1.0, 1.0)  # (N, C)
        best = cos.argmax(axis=1)
        return best, np.arccos(cos[np.arange(len(best)), best]).astype(np.float64)

    def to_dict(self) -> dict:
        return {"labels": list(self.labels), "prototypes": self.prototypes.tolist(), "threshold_rad": self.threshold_rad,
                "frr": self.frr, "calibrated_on": self.calibrated_on, "cosine_logit": list(self.cosine_logit),
                "enrol_margin": self.enrol_margin, "prototype_weight": self.prototype_weight,
                "temperature": self.temperature, "vote": self.vote,
                **({"class_thresholds_rad": list(self.class_thresholds_rad)} if self.class_thresholds_rad else {}),
                **({"one_shot_margin": self.one_shot_margin} if self.one_shot_margin is not None else {}),
                "enrol_gate": self.enrol_gate}

    @classmethod
    def from_dict(cls, d: dict) -> OpenSet:
        return cls(np.asarray(d["prototypes"], dtype=np.float32), tuple(d["labels"]), float(d["threshold_rad"]),
                   float(d["frr"]), d["calibrated_on"], tuple(d.get("cosine_logit", cls.cosine_logit)),
                   float(d.get("enrol_margin", cls.enrol_margin)),
                   float(d.get("prototype_weight", cls.prototype_weight)), float(d.get("temperature", cls.temperature)),
                   str(d.get("vote", cls.vote)), tuple(float(t) for t in d.get("class_thresholds_rad", ())),
                   None if d.get("one_shot_margin") is None else float(d["one_shot_margin"]),
                   str(d.get("enrol_gate", cls.enrol_gate)))


def weight_ok(weight: float) -> bool:
    """A prototype weight is a share of the built-in logits: a number in [0, 1] (NaN is not)."""
    return 0.0 <= weight <= 1.0


def temperature_ok(temperature: float) -> bool:
    """A temperature divides logits: a finite number above 0 (NaN and infinity are not)."""
    return 0.0 < temperature < float("inf")


def threshold_ok(threshold_rad: float) -> bool:
    """An "unknown" threshold is an angle between unit vectors: a number in (0, π] (NaN is not)."""
    return 0.0 < threshold_rad <= np.pi


def class_prototypes(embeddings: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, D) clip embeddings and (N,) labels -> (C, D) renormalised class means."""
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    means = np.stack([x[labels == c].mean(axis=0) for c in range(n_classes)])
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def dot_rows(x: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """(N, D) · (K, D) -> (N, K), each row summed on its own: a BLAS product's rows change in their last bits with
    N, and a stream's windows, answered a few at a time, would score otherwise than the same upload's."""
    return np.einsum("nd,kd->nk", x, vectors)


def calibrate(prototypes: np.ndarray, embeddings: np.ndarray, frr: float) -> float:
    """The angle that rejects a fraction `frr` of the known calibration clips (N, D)."""
    cos = np.clip(embeddings @ prototypes.T, -1.0, 1.0).max(axis=1)  # nearest prototype, (N,)
    return float(np.quantile(np.arccos(cos), 1.0 - frr))


def fit_cosine_logit(logits: np.ndarray, cosines: np.ndarray) -> tuple[float, float]:
    """(N, C) head logits and (N, C) cosines of the same windows to the class prototypes -> (a, b)
    of the least-squares line logit ≈ a·cos + b over every (window, class)."""
    a, b = np.polyfit(cosines.ravel().astype(np.float64), logits.ravel().astype(np.float64), 1)
    return float(a), float(b)


def auroc(known_scores: np.ndarray, unknown_scores: np.ndarray) -> float:
    """Probability that an unknown clip scores higher (farther) than a known one (ties count half)."""
    k, u = np.asarray(known_scores)[:, None], np.asarray(unknown_scores)[None, :]
    return float((u > k).mean() + 0.5 * (u == k).mean())
