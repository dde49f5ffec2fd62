"""From bytes to the model's input: one clip decoded, featurised, cut into windows, each window's
sound activity decided. The HTTP service, offline scoring, enrolment and export share it.

    prepare(bytes | path) -> PreparedClip: windows (N, T, M), their starts (s), activity (N,),
                             the whole log-mel and its frame levels (dB), duration, timings
    analyse(samples)      -> log-mel, frame levels and active frames (uploads and streams share it)
    spectrogram(log-mel)  -> a small JSON image of the log-mel for the web page
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np

from core.activity import ActivityConfig, active_frames, frame_gains_db, frame_levels, window_activity
from core.audio import DecodeLimits, decode_with_warnings
from core.features import FrontendConfig, frame_seconds, log_mel, patches


@dataclass
class PreparedClip:
    patches: np.ndarray  # (N, T, M) float32
    starts_s: np.ndarray  # (N,) window start times in seconds
    active: np.ndarray  # (N,) bool: the window holds sound (core.activity)
    logmel: np.ndarray  # (F, M) the whole clip's log-mel (log10 power)
    levels: np.ndarray  # (F,) each frame's level in dB (core.activity): sharpens event edges
    duration_s: float
    timings: dict = field(default_factory=dict)  # seconds spent in decode and features
    warnings: list[str] = field(default_factory=list)  # a file that decoded only in part says so here

    @property
    def silent(self) -> bool:
        return not self.active.any()


def prepare(data: bytes | str | os.PathLike, frontend: FrontendConfig, activity: ActivityConfig = ActivityConfig(),
            limits: DecodeLimits = DecodeLimits()) -> PreparedClip:
    """Decode and featurise one clip; raises the typed errors of core.audio."""
    t0 = time.perf_counter()
    waveform, warnings = decode_with_warnings(data, frontend.sample_rate, limits)
    t1 = time.perf_counter()
    logmel, levels, frame_active = analyse(waveform, frontend, activity)
    windows, starts = patches(logmel, frontend)  # (N, T, M), (N,) frames
    active = window_activity(frame_active, starts, frontend, activity)
    t2 = time.perf_counter()
    starts_s = frame_seconds(starts, frontend)
    return PreparedClip(windows, starts_s, active, logmel, levels, waveform.size / frontend.sample_rate,
                        {"decode": t1 - t0, "features": t2 - t1}, warnings)


def analyse(waveform: np.ndarray, frontend: FrontendConfig, activity: ActivityConfig
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S,) samples -> (F, M) log-mel, (F,) each frame's level in dB, (F,) whether each frame holds
    sound: the frame analysis uploads and streams share."""
    logmel = log_mel(waveform, frontend)
    levels = frame_levels(logmel, frontend, frame_gains_db(waveform, frontend))
    return logmel, levels, active_frames(levels, frontend, activity)


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
