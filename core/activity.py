"""Sound activity: which 1 s windows hold sound, decided from the log-mel (no second model).

    frame level (dB)  10·log10(mean over mels of 10^logmel) + the segment's normalisation gain,
                      shifted so that a full-scale 1 kHz sine reads -3 dB (≈ dBFS RMS)
    active frame      level > floor_db  and  level > (loudest frame of its 5 s segment) − relative_db
    active window     at least min_active_s of active frames (counted once, even in a tiled clip)

Inactive windows do not vote and do not enter the clip embedding; a clip with no active window is
answered "silence". The thresholds live in the artifact (`manifest.json` → `activity`) and in every
training checkpoint. Training, which has only the cached (normalised) log-mels, passes no gains:
the floor then applies to the normalised level, which is never below the true one.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from core import errors
from core.features import FrontendConfig, log_mel, patch_starts, segment_scale, segment_starts, segments


@dataclass(frozen=True)
class ActivityConfig:
    floor_db: float = -60.0  # quieter frames are silence, whatever the rest of the clip does
    relative_db: float = 40.0  # frames this far below their segment's loudest are silence
    min_active_s: float = 0.05  # less active time than this in a window: the window is silence

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ActivityConfig:
        valid = {f.name for f in dataclasses.fields(cls)}
        if set(d) - valid:
            raise errors.ConfigError(f"unknown activity keys {sorted(set(d) - valid)}; valid keys: {sorted(valid)}")
        return cls(**d)


def frame_gains_db(waveform: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(samples,) -> (F,) per log-mel frame, the gain (dB) that log_mel's peak normalisation removed
    from its segment."""
    gains = []
    for segment in segments(np.asarray(waveform, dtype=np.float32), cfg):
        gains.append(np.full(1 + segment.size // cfg.hop_length, 20.0 * np.log10(segment_scale(segment, cfg))))
    return np.concatenate(gains)


def frame_levels(logmel: np.ndarray, cfg: FrontendConfig, gains_db: np.ndarray | None = None) -> np.ndarray:
    """(F, M) log-mel and (F,) frame gains -> (F,) frame levels in dB; without gains, the normalised level."""
    level = 10.0 * np.log10(np.mean(10.0 ** logmel.astype(np.float64), axis=1)) - _reference_db(cfg)
    return level if gains_db is None else level + gains_db


def window_power(levels: np.ndarray, starts: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """(F,) frame levels (dB), (N,) window start frames -> (N,) each window's mean frame power (linear;
    0 for a window past the levels)."""
    power = 10.0 ** (np.asarray(levels, dtype=np.float64) / 10.0)  # (F,)
    return np.array([power[s:s + cfg.patch_frames].mean() if s < len(power) else 0.0 for s in starts])


def active_frames(levels: np.ndarray, cfg: FrontendConfig, activity: ActivityConfig) -> np.ndarray:
    """(F,) levels -> (F,) bool: above the floor and within relative_db of the segment's loudest frame."""
    if not len(levels):
        return np.zeros(0, bool)
    starts = segment_starts(len(levels), cfg)  # (S,)
    loudest = np.repeat(np.maximum.reduceat(levels, starts), np.diff(starts, append=len(levels)))  # (F,)
    return (levels > activity.floor_db) & (levels > loudest - activity.relative_db)


def window_activity(active: np.ndarray, starts: np.ndarray, cfg: FrontendConfig, activity: ActivityConfig) -> np.ndarray:
    """(F,) active frames and (N,) window start frames -> (N,) bool: the window holds enough sound."""
    counts = np.concatenate([[0], np.cumsum(active)])
    ends = np.minimum(starts + cfg.patch_frames, len(active))
    needed = max(1, int(np.ceil(activity.min_active_s * cfg.frames_per_s)))
    return counts[ends] - counts[starts] >= needed


def active_starts(logmel: np.ndarray, cfg: FrontendConfig, activity: ActivityConfig) -> np.ndarray:
    """Start frames of every possible (hop 1) window of a cached log-mel that holds sound; for
    training, which draws its labelled patches only there. Empty when the clip is all silence."""
    starts = np.arange(max(len(logmel) - cfg.patch_frames, 0) + 1)
    active = active_frames(frame_levels(logmel, cfg), cfg, activity)
    return starts[window_activity(active, starts, cfg, activity)]


@functools.lru_cache(maxsize=8)
def _reference_db(cfg: FrontendConfig) -> float:
    """The normalised level of a full-scale 1 kHz sine, minus its 3.01 dB RMS: the 0 of the dB scale."""
    t = np.arange(cfg.sample_rate) / cfg.sample_rate
    sine = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    level = 10.0 * np.log10(np.mean(10.0 ** log_mel(sine, cfg).astype(np.float64), axis=1))
    gain = 20.0 * np.log10(1.0 + cfg.peak_offset)
    return float(np.median(level) - gain + 3.0103)


def voting_windows(active: np.ndarray) -> np.ndarray:
    """(N,) which windows of a clip hold sound -> (N,) bool, the windows its vote and embedding read:
    those with sound, every window of a clip with none."""
    return active if active.any() else np.ones_like(active)


def window_activity_of(logmel: np.ndarray, cfg: FrontendConfig, activity: ActivityConfig,
                       gains_db: np.ndarray | None = None) -> np.ndarray:
    """(F, M) log-mel -> (N,) bool for the windows of `patches(logmel, cfg)`, in order."""
    starts = patch_starts(max(len(logmel), cfg.patch_frames), cfg)
    return window_activity(active_frames(frame_levels(logmel, cfg, gains_db), cfg, activity), starts, cfg, activity)
