"""The one answer: a clip's window outputs -> ClipAnswer. /classify, /embed, /search, the web page,
offline rows and the stream all build it here and only serialise it.

    windows     logits (N, C), L2-normalised embeddings (N, D), activity (N,) bool, starts (N,) s
    classes     the model's C classes (its head) + enrolled classes (their prototypes) on one logit
                scale, K = C + E: a built-in class's logit is (1 − w)·the head's + w·(a·cos to its
                prototype + b), a·cos + b the line of logit against cosine fitted at export and w the
                model's prototype weight (0: the head alone); an enrolled class's logit is the top
                built-in logit plus a·(cos to its prototype − cos to the prototype of that top class
                − margin) in the windows where that is above the top, else none (−inf; class_logits)
    clip gate   for a model whose enrol_gate is "clip": where the clip embedding is closer to an enrolled
                class's prototype, by that class's margin m (at least 0), than to every built-in prototype, the
                class ranked first among the enrolled ones by cosine less m (at m = 0: the nearest prototype of
                all), that class's logit is raised to the top logit in each of the clip's windows (lift):
                it ranks first, with at least the share of the class it displaced (ties go to it); else the
                windows' logits as they are. For one window it names what already wins that window (a > 0;
                up to rounding at an exact tie), so it changes only the answer of a clip of several windows,
                whose mean may lie nearer the class than any one window does, and which the class's windows
                alone may not carry
    ranking     the closed-set answer: the mean over the windows with sound of each window's softmax
                over the K classes, P(class | it is one of the K); windows without sound do not vote
                and do not enter the clip embedding
    vote        the model's: the windows' mean ("mean"), or their mean weighted by each window's
                amplitude, the square root of its frames' mean power ("amplitude"; vote_weights)
    temperature the model's T calibrates the scores without changing any order: each probability
                vector p becomes p^(1/T), renormalised (sharpen; for one window, softmax(logits / T)),
                the clip's after its windows are averaged
    open set    "unknown" when θ, the angle between the clip embedding and its nearest prototype (any
                class), exceeds the threshold calibrated by cross-validation (a stated false-rejection
                rate; the nearest class's own where the model has one per class; a request may set one
                for every class, threshold_rad); off with open_set=false or for a model
                without prototypes
    answer      label = "silence" (no window with sound; score null), else "unknown" (score null),
                else the top of the ranking (score = its probability in the ranking)

The timeline answers each window as a clip of that window alone (window_answers: "silence" without
sound, "unknown" by that window's own angle, else its top class), as the live stream does. Events
(core.events) are found in the same window probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core import errors
from core.activity import window_power
from core.classes import SILENCE, UNKNOWN, ClassSet, unit
from core.events import Event, EventConfig, detect
from core.features import FrontendConfig, frame_at
from core.openset import dot_rows, threshold_ok


@dataclass(frozen=True)
class AnswerOptions:
    top_k: int = 5
    open_set: bool = True  # False: never "unknown", the top of the ranking
    windows: bool = False  # a per-window timeline
    events: EventConfig | None = None  # sound events with these parameters (the artifact's); None: none
    threshold_rad: float | None = None  # the "unknown" angle for this answer; None: the model's calibrated one

    def __post_init__(self):
        if not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1:
            raise errors.InvalidParameter(f"top_k must be an integer of at least 1, got {self.top_k!r}")
        if self.threshold_rad is not None and not threshold_ok(self.threshold_rad):
            raise errors.InvalidParameter(f"threshold_rad must be an angle in radians above 0 and at most π "
                                          f"({np.pi!r}), got {self.threshold_rad}")


@dataclass(frozen=True)
class WindowAnswer:
    start_s: float
    end_s: float
    label: str  # a class, "unknown" or "silence"
    score: float | None
    ranking: tuple[tuple[str, float], ...] = ()  # its top_k classes; none for silence


@dataclass(frozen=True)
class ClipAnswer:
    label: str  # a class, "unknown" or "silence"
    score: float | None  # the ranking's probability of `label`; None for "silence" and "unknown"
    ranking: tuple[tuple[str, float], ...]  # the top_k classes: P(class | it is one of the known classes)
    embedding: np.ndarray | None  # (D,) L2-normalised mean of the active windows; None for silence
    open_set: dict | None  # {"unknown", "nearest_label", "angle_rad", "threshold_rad"} when the open set decides
    active_windows: int  # windows with sound, of n_windows
    n_windows: int
    windows: tuple[WindowAnswer, ...] | None = None
    events: tuple[Event, ...] | None = None

    def to_dict(self) -> dict:
        """JSON-ready: what /classify answers (without the request's own fields)."""
        out = {"label": self.label, "score": round_score(self.score),
               "ranking": [{"label": label, "score": round_score(p)} for label, p in self.ranking],
               "activity": {"active_windows": self.active_windows, "windows": self.n_windows}}
        if self.open_set is not None:
            out["open_set"] = self.open_set
        if self.windows is not None:
            out["windows"] = [{"start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3), "label": w.label,
                               "score": round_score(w.score)} for w in self.windows]
        if self.events is not None:
            out["events"] = [e.to_dict() for e in self.events]
        return out


def answer(logits: np.ndarray, embeddings: np.ndarray, active: np.ndarray, starts_s: np.ndarray,
           window_s: float, labels: tuple[str, ...], classes: ClassSet | None,
           options: AnswerOptions = AnswerOptions(), levels: np.ndarray | None = None,
           frontend: FrontendConfig = FrontendConfig(), duration_s: float | None = None) -> ClipAnswer:
    """(N, C) logits, (N, D) embeddings, (N,) activity and start times -> the clip's answer.

    `labels` are the model's classes; `classes` (or None for a model without prototypes) adds the
    enrolled ones and the open set. `levels`: the clip's (F,) frame levels (dB) from the log-mel of
    `frontend`, which weigh the windows of an amplitude vote and sharpen the edges of events (without
    them the windows vote alike). `duration_s`: the clip's, where no window of the timeline ends after it
    (a clip shorter than a window is tiled to one)."""
    names = classes.labels if classes is not None else labels
    temperature = _temperature(classes)
    scaled = class_logits(logits, embeddings, classes)  # (N, K): the window gate's
    window_probs = sharpen(softmax(scaled), temperature)  # (N, K): each window as a clip alone (window_probabilities)
    timeline = (window_answers(window_probs, embeddings, active, starts_s, window_s, names, classes, options,
                               duration_s) if options.windows else None)
    events = (detect(window_probs, active, starts_s, window_s, names, options.events, levels, frontend,
                     duration_s=duration_s) if options.events else None)
    if not active.any():
        return ClipAnswer(SILENCE, None, (), None, None, 0, len(active), timeline, events)
    embedding = clip_embedding(embeddings[active])
    gate = clip_gate(embedding, classes)  # the enrolled class the clip gate names, or None
    probs = softmax(scaled[active] if gate is None else lift(scaled[active], gate))  # (A, K) at T = 1
    weights = vote_weights(levels, starts_s[active], frontend) if _vote(classes) == "amplitude" else None  # (A,)
    clip_probs = sharpen(np.average(probs, axis=0, weights=weights), temperature)  # (K,)
    ranking = _rank(clip_probs, names, options.top_k, first=gate)
    verdict = _open_set(embedding[None], classes, options.threshold_rad)[0] if options.open_set and classes is not None else None
    label, score = (UNKNOWN, None) if verdict is not None and verdict["unknown"] else ranking[0]
    return ClipAnswer(label, score, ranking, embedding, verdict, int(active.sum()), len(active), timeline, events)


def class_logits(logits: np.ndarray, embeddings: np.ndarray, classes: ClassSet | None) -> np.ndarray:
    """(N, C) head logits + (N, E) logits of the enrolled classes -> (N, C + E).

    The built-in classes' logits are the head's blended with their prototypes' (the model's prototype
    weight w; 0 leaves the head's). An enrolled class is measured against that top choice: its logit is
    the top built-in logit plus a·(cos(h, its prototype) − cos(h, the prototype of the top class) −
    margin) where that is above the top (the window closer to it by the margin: the class's own, else the
    model's), else −inf: a window no enrolled class wins keeps its built-in probabilities as they were, so
    enrolment changes the built-in answers only where an enrolled prototype outscores them."""
    if not (np.isfinite(logits).all() and np.isfinite(embeddings).all()):
        raise errors.ModelFailure("the model answered NaN or infinity for this clip's windows (a damaged model, or an "
                                  "fp16 variant that overflows): no answer can be built from it")
    logits = logits.astype(np.float64)
    if classes is None or not (classes.builtin.prototype_weight or classes.enrolled):
        return logits
    (a, b), w = classes.builtin.cosine_logit, classes.builtin.prototype_weight
    h = unit(embeddings)  # (N, D)
    if w:
        logits = (1 - w) * logits + w * (a * dot_rows(h, classes.builtin.prototypes) + b)  # (N, C)
    if not classes.enrolled:
        return logits
    top = logits.argmax(axis=1)  # (N,)
    top_cosine = np.einsum("nd,nd->n", h, classes.builtin.prototypes[top])  # (N,)
    enrolled = dot_rows(h, np.stack([c.prototype for c in classes.enrolled]))  # (N, E)
    relative = enrolled - top_cosine[:, None] - classes.margins[None, :]  # (N, E)
    wins = np.where(relative > 0, logits.max(axis=1, keepdims=True) + a * relative, -np.inf)  # (N, E)
    return np.concatenate([logits, wins], axis=1)


def clip_gate(embedding: np.ndarray, classes: ClassSet | None) -> int | None:
    """(D,) L2-normalised clip embedding -> the enrolled class (its index of the K) the clip gate names, else None
    (or where the model's enrol_gate is not "clip"): of the enrolled classes, the one the windows would rank first
    (the highest cosine to its prototype less its margin m), where its cosine less max(m, 0) is above the cosine to
    every built-in prototype (a negative margin, which lets a class win windows more easily, gives a whole clip no
    bonus: at −0.01 for one clip it cost the built-in classes 5 points, BENCHMARKS.md)."""
    if classes is None or not classes.enrolled or classes.builtin.enrol_gate != "clip":
        return None
    n_builtin, margins = len(classes.builtin.labels), classes.margins
    cosines = classes.cosines(embedding[None])[0].astype(np.float64)  # (K,)
    best = int(np.argmax(cosines[n_builtin:] - margins))  # as the window gate ranks the enrolled classes
    if cosines[n_builtin + best] - max(margins[best], 0.0) > cosines[:n_builtin].max():  # a tie: the built-in class
        return n_builtin + best
    return None


def lift(logits: np.ndarray, gate: int) -> np.ndarray:
    """(N, K) logits -> (N, K) with class `gate`'s logit raised to each row's top: it ranks first in every row
    (tied with the class it displaced, where it did not win the row), so in their vote too."""
    lifted = logits.copy()
    lifted[:, gate] = logits.max(axis=1)
    return lifted


def window_probabilities(logits: np.ndarray, embeddings: np.ndarray, classes: ClassSet | None) -> np.ndarray:
    """(N, C) logits, (N, D) embeddings -> (N, K) each window's served probabilities over the K classes
    (at the model's temperature): what the timeline, events and the stream read. A window alone needs no clip
    gate: the class it would name already wins the window (its cosine less its margin above that of the top
    class's prototype, and of every other enrolled class's less theirs; up to rounding at an exact tie)."""
    return sharpen(softmax(class_logits(logits, embeddings, classes)), _temperature(classes))


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, K) -> (N, K) row-wise softmax in float64."""
    x = logits.astype(np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """(..., K) probabilities -> p^(1/T) renormalised along the last axis: softmax(logits / T) for one
    window's softmax, and the same order for a mean of them (T = 1: unchanged)."""
    if temperature == 1.0:
        return probs
    log_p = np.log(np.maximum(probs, 1e-300)) / temperature
    p = np.exp(log_p - log_p.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def clip_embedding(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) L2-normalised window embeddings -> (D,) their mean, L2-renormalised, float32."""
    if not np.isfinite(embeddings).all():  # an enrolment would save a prototype that no server can load
        raise errors.ModelFailure("the model answered NaN or infinity for this clip's windows: no embedding")
    mean = embeddings.astype(np.float64).mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def _open_set(embeddings: np.ndarray, classes: ClassSet, threshold_rad: float | None) -> list[dict]:
    """(N, D) L2-normalised clip embeddings -> each one's verdict: its nearest prototype, its angle, "unknown"."""
    nearest, angles = classes.nearest_each(embeddings)  # (N,), (N,)
    out = []
    for index, angle in zip(nearest, angles):
        label = classes.labels[index]
        threshold = classes.threshold_of(label) if threshold_rad is None else threshold_rad
        out.append({"unknown": bool(angle > threshold), "nearest_label": label, "angle_rad": round(float(angle), 6),
                    "threshold_rad": round(threshold, 6)})
    return out


def _rank(probs: np.ndarray, names: tuple[str, ...], top_k: int, first: int | None = None) -> tuple[tuple[str, float], ...]:
    """(K,) probabilities -> the top_k (label, probability), highest first (ties: class `first`, the clip
    gate's, then the class order)."""
    order = np.lexsort((np.arange(len(probs)) != first, -probs))[:top_k]  # lexsort: the last key first
    return tuple((names[i], float(probs[i])) for i in order)


def window_answers(window_probs: np.ndarray, embeddings: np.ndarray, active: np.ndarray, starts_s: np.ndarray,
                   window_s: float, names: tuple[str, ...], classes: ClassSet | None,
                   options: AnswerOptions, duration_s: float | None = None) -> tuple[WindowAnswer, ...]:
    """(N, K) calibrated window probabilities, (N, D) embeddings, (N,) activity and starts -> each
    window answered as a clip of that window alone: "silence" without sound, "unknown" when the open
    set turns its embedding away, else its top class. A window ends at the clip's end (`duration_s`) at
    the latest."""
    last_end = float("inf") if duration_s is None else duration_s
    verdicts = (_open_set(unit(embeddings), classes, options.threshold_rad) if options.open_set and classes is not None
                else None)  # each window's embedding as the clip embedding of that window alone
    out = []
    for i, (p, is_active, start) in enumerate(zip(window_probs, active, starts_s)):
        label, score, ranking = SILENCE, None, ()
        if is_active:
            ranking = _rank(p, names, options.top_k)
            label, score = (UNKNOWN, None) if verdicts is not None and verdicts[i]["unknown"] else ranking[0]
        out.append(WindowAnswer(float(start), min(float(start) + window_s, last_end), label, score, ranking))
    return tuple(out)


def vote_weights(levels: np.ndarray | None, starts_s: np.ndarray, frontend: FrontendConfig) -> np.ndarray | None:
    """(F,) the clip's frame levels (dB), (N,) window starts (s) -> (N,) each window's weight in the
    clip's vote: the square root of its frames' mean power. None (equal weights) without levels or
    where no weight is a positive number."""
    if levels is None:
        return None
    weights = np.sqrt(window_power(levels, [frame_at(s, frontend) for s in starts_s], frontend))
    return weights if np.isfinite(weights).all() and weights.sum() > 0 else None


def _vote(classes: ClassSet | None) -> str:
    return classes.builtin.vote if classes is not None else "mean"


def _temperature(classes: ClassSet | None) -> float:
    return classes.builtin.temperature if classes is not None else 1.0


def round_score(x: float | None) -> float | None:
    """Scores as answers carry them (6 decimals)."""
    return None if x is None else round(float(x), 6)
