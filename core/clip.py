"""List-in/array-out functions that the HTTP service and offline scoring share.

    prepare(bytes | path) -> PreparedClip: patches (N, T, M), window starts, duration, timings
    model outputs (N, C) logits and (N, D) embeddings per clip
        -> clip_probabilities (C,)   mean softmax over the windows
        -> clip_embedding (D,)       mean of window embeddings, L2-renormalised
        -> top_labels, window_timeline (JSON-ready)
    spectrogram(log-mel) -> a small JSON image of the log-mel for the web page
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from core.audio import DecodeLimits, decode
from core.features import FrontendConfig, log_mel, patch_starts, patches


@dataclass
class PreparedClip:
    patches: np.ndarray  # (N, T, M) float32
    starts_s: np.ndarray  # (N,) window start times in seconds
    logmel: np.ndarray  # (F, M) the whole clip's log-mel (log10 power)
    duration_s: float
    timings: dict = field(default_factory=dict)  # seconds spent in decode and features


def prepare(data: bytes | str | os.PathLike, frontend: FrontendConfig, limits: DecodeLimits = DecodeLimits()) -> PreparedClip:
    """Decode and featurise one clip; raises the typed errors of core.audio."""
    t0 = time.perf_counter()
    waveform = decode(data, frontend.sample_rate, limits)
    t1 = time.perf_counter()
    logmel = log_mel(waveform, frontend)  # (F, M)
    windows = patches(logmel, frontend)  # (N, T, M)
    starts = patch_starts(max(logmel.shape[0], frontend.patch_frames), frontend) * frontend.hop_length / frontend.sample_rate
    t2 = time.perf_counter()
    return PreparedClip(windows, starts, logmel, waveform.size / frontend.sample_rate, {"decode": t1 - t0, "features": t2 - t1})


def softmax(logits: np.ndarray) -> np.ndarray:
    """(N, C) -> (N, C) row-wise softmax in float64."""
    x = logits.astype(np.float64)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    return x / x.sum(axis=1, keepdims=True)


def clip_probabilities(logits: np.ndarray) -> np.ndarray:
    """(N, C) window logits -> (C,) mean of window softmaxes."""
    return softmax(logits).mean(axis=0)


def clip_embedding(embeddings: np.ndarray) -> np.ndarray:
    """(N, D) L2-normalised window embeddings -> (D,) their mean, L2-renormalised, float32."""
    mean = embeddings.astype(np.float64).mean(axis=0)
    return (mean / max(np.linalg.norm(mean), 1e-12)).astype(np.float32)


def top_labels(probabilities: np.ndarray, labels: tuple[str, ...], k: int) -> list[dict]:
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [{"label": labels[i], "score": round(float(probabilities[i]), 6)} for i in order]


def window_timeline(scores: np.ndarray, starts_s: np.ndarray, frontend: FrontendConfig, labels) -> list[dict]:
    """(N, K) window scores (probabilities or cosines) -> per window: start and end (s), top label, score."""
    best = scores.argmax(axis=1)
    return [
        {"start_s": round(float(s), 3), "end_s": round(float(s) + frontend.patch_seconds, 3),
         "label": labels[b], "score": round(float(p[b]), 6)}
        for s, b, p in zip(starts_s, best, scores)
    ]


def spectrogram(logmel: np.ndarray, frames_per_s: float, max_columns: int = 600, dynamic_range_db: float = 80.0) -> dict:
    """(F, M) log10 power -> at most `max_columns` time columns (mean-pooled) of M values 0-255
    (0 = `dynamic_range_db` below the loudest bin), lowest mel band first."""
    pool = max(1, -(-len(logmel) // max_columns))  # ceil
    usable = len(logmel) // pool * pool  # drops a tail shorter than one column
    pooled = logmel[:usable].reshape(-1, pool, logmel.shape[1]).mean(axis=1)  # (W, M)
    db = 10.0 * pooled
    scaled = np.clip((db - (db.max() - dynamic_range_db)) / dynamic_range_db, 0.0, 1.0)
    return {"columns_per_s": round(frames_per_s / pool, 4), "n_mels": int(logmel.shape[1]),
            "dynamic_range_db": dynamic_range_db, "values": np.round(scaled * 255).astype(int).tolist()}
