"""Sound events from window scores: which class is heard, from when to when.

    per class k: p_k over the 1 s windows (each window's softmax; 0 where a window holds no sound)
      -> median filter over `median_windows` windows (silence beyond the audio: a lone window at
       either end is dropped as it is anywhere else; a clip of fewer windows is not filtered)
      -> hysteresis: an event starts where p_k >= `on` and lasts while p_k >= `off`
      -> events of one class at most `max_gap_s` apart are merged; spanning fewer than
         `min_duration_s` of windows, dropped
    times: windows overlap (1 s, hop 0.5 s), so window i stands for the span between the midpoints
    of its centre and its neighbours' (the first from 0 s, the last to its end); an event spans its
    windows' spans. With the clip's frame levels (dB, 10 ms frames), its edges are then sharpened
    to the first and last frame, within the 1 s windows that found it, no more than `edge_db` below
    its loudest frame. score: the mean of p_k over its windows.

Silence is never an event. "unknown" is decided for a clip (core.answer), not per event. The
parameters live in the artifact (`events` in manifest.json), chosen by benchmarks/events_cv.py.
Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy.ndimage import median_filter

from core.features import FrontendConfig, frame_at, frame_seconds


@dataclass(frozen=True)
class EventConfig:
    on: float = 0.5  # a class's window probability at which an event starts
    off: float = 0.3  # ... below which it ends
    median_windows: int = 3  # median filter length (odd), in windows
    min_duration_s: float = 0.5
    max_gap_s: float = 0.5
    edge_db: float = 20.0  # with frame levels: an event's edges are its frames within this of its loudest (0: its windows')

    def __post_init__(self):
        if not 0 <= self.off <= self.on <= 1:
            raise ValueError(f"events need 0 <= off <= on <= 1, got on {self.on} and off {self.off}")
        if self.median_windows < 1 or self.median_windows % 2 == 0:
            raise ValueError(f"median_windows must be an odd number of windows, got {self.median_windows}")
        if not (self.min_duration_s >= 0 and self.max_gap_s >= 0 and self.edge_db >= 0):
            raise ValueError(f"min_duration_s, max_gap_s and edge_db must be >= 0, got {self.min_duration_s}, "
                             f"{self.max_gap_s} and {self.edge_db}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EventConfig:
        return cls(**{f.name: type(getattr(cls, f.name))(d[f.name]) for f in fields(cls) if f.name in d})


@dataclass(frozen=True)
class Event:
    label: str
    start_s: float
    end_s: float
    score: float

    def to_dict(self) -> dict:
        return {"label": self.label, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "score": round(self.score, 6)}


def detect(probs: np.ndarray, active: np.ndarray, starts_s: np.ndarray, window_s: float, labels: tuple[str, ...],
           cfg: EventConfig = EventConfig(), levels: np.ndarray | None = None,
           frontend: FrontendConfig = FrontendConfig(), final_before_s: float = float("inf"),
           duration_s: float | None = None) -> tuple[Event, ...]:
    """(N, K) window probabilities, (N,) activity and start times (and optionally the (F,) frame
    levels in dB of the log-mel `frontend` made) -> events, in time order, within the audio (`duration_s`,
    where a clip shorter than a window was tiled) and never overlapping for one label. `final_before_s` (a
    live stream): only the events whose windows, not their sharpened edges, ended more than max_gap_s before it."""
    if len(probs) == 0:
        return ()
    p = np.where(active[:, None], probs, 0.0)  # (N, K): silence votes for nothing
    if 1 < cfg.median_windows <= len(p):  # a clip shorter than the filter has no neighbours to outvote a window
        p = median_filter(p, size=(cfg.median_windows, 1), mode="constant", cval=0.0)  # silence beyond the audio
    bounds = window_bounds(np.asarray(starts_s, dtype=np.float64), window_s)  # (N + 1,)
    events = []
    for k, runs in _hysteresis(p, cfg.on, cfg.off).items():
        label, runs = labels[k], _merge(runs, bounds, cfg.max_gap_s)
        previous_end = -np.inf
        for first, last in runs:  # windows first..last inclusive
            start, end = bounds[first], bounds[last + 1]
            if end - start < cfg.min_duration_s - 1e-9:  # judged on the windows, before the edges are sharpened
                continue
            if end + cfg.max_gap_s >= final_before_s:  # the run may still grow
                continue
            if levels is not None and cfg.edge_db > 0:  # the frames' edges, within the windows' (a frame may end past the audio)
                start, end = _sharpen(levels, frontend, starts_s[first], starts_s[last] + window_s, cfg.edge_db)
                end = min(end, starts_s[last] + window_s)
            end = end if duration_s is None else min(end, duration_s)
            start = max(start, previous_end)  # sharpened edges of two runs may reach into each other
            if end <= start:  # its loud part was the run before's
                continue
            previous_end = end
            events.append(Event(label, float(start), float(end), float(p[first:last + 1, k].mean())))
    return tuple(sorted(events, key=lambda e: (e.start_s, e.label)))


def live_cutoff_s(starts_s: np.ndarray, window_s: float, cfg: EventConfig) -> float:
    """A live stream's `final_before_s` for `detect`, given the (N,) starts of its windows so far: the filtered
    scores of its last median_windows // 2 windows still change with the windows to come."""
    if len(starts_s) < cfg.median_windows:  # not filtered yet (detect): the next windows may filter any run away
        return -np.inf
    settled = starts_s[len(starts_s) - 1 - cfg.median_windows // 2]
    return float(settled) - window_s


def window_bounds(starts_s: np.ndarray, window_s: float) -> np.ndarray:
    """(N,) window starts -> (N + 1,) the edges of the spans the windows stand for."""
    centres = starts_s + window_s / 2
    return np.concatenate([[starts_s[0]], (centres[:-1] + centres[1:]) / 2, [starts_s[-1] + window_s]])


def _sharpen(levels: np.ndarray, frontend: FrontendConfig, start_s: float, end_s: float, edge_db: float):
    """The first and last frame of [start_s, end_s) within edge_db of its loudest frame, in seconds."""
    a, b = frame_at(start_s, frontend), min(len(levels), frame_at(end_s, frontend))
    if b <= a:
        return start_s, end_s
    loud = np.flatnonzero(levels[a:b] >= levels[a:b].max() - edge_db)
    start, last = frame_seconds(np.array([a + loud[0], a + loud[-1]]), frontend)
    return start, last + 1 / frontend.frames_per_s


def _hysteresis(p: np.ndarray, on: float, off: float) -> dict[int, list[tuple[int, int]]]:
    """(N, K) -> {k: [(first, last)]} each class's runs of windows, from p >= on while p >= off (classes
    without a run left out). A window is inside a run where the last window at or above `on` so far comes
    after the last one below `off` (off <= on: EventConfig): no loop over windows (a live stream calls this at
    every window)."""
    index = np.arange(len(p))[:, None]  # (N, 1)
    last_on = np.maximum.accumulate(np.where(p >= on, index, -1), axis=0)  # (N, K)
    last_off = np.maximum.accumulate(np.where(p < off, index, -1), axis=0)
    inside = np.zeros((len(p) + 2, p.shape[1]), np.int8)  # (N + 2, K): a window outside at either end
    inside[1:-1] = last_on > last_off
    edges = np.diff(inside, axis=0)  # (N + 1, K): +1 where a run starts, -1 after it ends
    run_k, firsts = np.nonzero(edges.T == 1)  # in class order, then time order
    _, ends = np.nonzero(edges.T == -1)  # the same runs' ends, in the same order
    runs: dict[int, list[tuple[int, int]]] = {}
    for k, first, end in zip(run_k, firsts, ends):
        runs.setdefault(int(k), []).append((int(first), int(end) - 1))
    return runs


def _merge(runs: list[tuple[int, int]], bounds: np.ndarray, max_gap_s: float) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in runs:
        if merged and bounds[first] - bounds[merged[-1][1] + 1] <= max_gap_s + 1e-9:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged
