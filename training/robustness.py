"""The recording-condition table: held-out clips as recorded elsewhere, scored as the service scores.

    clean       the clip as it is
    lowpass_4k  resampled to 8 kHz and back (a phone, a cheap recorder): nothing above 4 kHz
    noise_10db  real background audio (clips of a pool never used in training) at 10 dB SNR: each clip its own
                noise clip, drawn over the whole pool by the clip's name (the same in every fold and run)
    gain_-30db  30 dB quieter
    mp3_24k     re-encoded as MP3 at 24 kbit/s (libsndfile's LAME, compression level 0.9)
    reverb      played in a room: convolved with a synthetic impulse response (the direct path, then
                Gaussian noise decaying 60 dB in 0.6 s, as much energy as the direct path; fixed seed)

Each condition's log-mels (with the gains the activity decision needs) are computed once per clip
and cached; the clip answer is the mean softmax over its windows with sound (all windows when none).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf
import soxr

from core.activity import ActivityConfig, frame_gains_db, voting_windows, window_activity_of
from core.answer import softmax
from core.audio import decode
from core.features import FrontendConfig, log_mel, patches

CONDITIONS = ("clean", "lowpass_4k", "noise_10db", "gain_-30db", "mp3_24k", "reverb")
VERSION = 2  # bump when a perturbation changes: the cache key (2: the noise clip by the clip's name, over the pool;
#   1 gave clip i of each call noise clip i, so every fold's 80 held-out clips heard the pool's first 80)


def room_response(rate: int, rt60_s: float = 0.6, drr_db: float = 0.0, seed: int = 0) -> np.ndarray:
    """(samples,) a synthetic room impulse response: 1 (the direct path), then Gaussian noise whose
    amplitude decays 60 dB in rt60_s, scaled to 10^(-drr_db/10) of the direct path's energy."""
    t = np.arange(1, int(rt60_s * rate)) / rate
    tail = np.random.default_rng(seed).standard_normal(t.size) * 10 ** (-3 * t / rt60_s)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    return np.concatenate([[1.0], tail])


def perturb(y: np.ndarray, condition: str, rate: int, noise: np.ndarray | None = None) -> np.ndarray:
    """(samples,) float32 at `rate` -> the same clip under `condition`."""
    if condition == "clean":
        return y
    if condition == "lowpass_4k":
        return soxr.resample(soxr.resample(y, rate, 8_000), 8_000, rate)[: y.size].astype(np.float32)
    if condition == "noise_10db":
        noise = np.resize(noise, y.size)  # repeats a short background
        scale = np.sqrt(np.mean(y.astype(np.float64) ** 2) / max(np.mean(noise.astype(np.float64) ** 2), 1e-20))
        return (y + scale * 10 ** (-10 / 20) * noise).astype(np.float32)
    if condition == "gain_-30db":
        return (y * 10 ** (-30 / 20)).astype(np.float32)
    if condition == "mp3_24k":
        buffer = io.BytesIO()
        sf.write(buffer, np.clip(y, -1, 1), rate, format="MP3", compression_level=0.9, bitrate_mode="CONSTANT")
        return decode(buffer.getvalue(), rate)[: y.size]
    if condition == "reverb":
        return scipy.signal.fftconvolve(y, room_response(rate))[: y.size].astype(np.float32)
    raise ValueError(f"unknown condition {condition!r}; valid: {CONDITIONS}")


def condition_features(paths: list[Path], noise_paths: list[Path], frontend: FrontendConfig, cache_dir: str | Path,
                       conditions=CONDITIONS) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """{condition: per clip (log-mel (F, M), frame gains (F,))}; each clip its noise_for(). Cached
    by the clip's bytes, the front-end and, under noise, the noise clip's bytes (so that another pool or
    order of clips never reads a mix made with another noise)."""
    cache = Path(cache_dir) / "robustness"
    cache.mkdir(parents=True, exist_ok=True)
    out = {c: [] for c in conditions}
    for path in paths:
        data = Path(path).read_bytes()
        key = hashlib.sha256(data + frontend.cache_json().encode() + str(VERSION).encode()).hexdigest()[:20]
        y = None
        for condition in conditions:
            noise_path = noise_for(path, noise_paths) if condition == "noise_10db" else None
            name = f"{key}-{condition}" + (f"-{_digest(noise_path)}" if noise_path else "")
            target = cache / f"{name}.npz"
            if not target.exists():
                y = decode(data, frontend.sample_rate) if y is None else y
                noise = decode(noise_path, frontend.sample_rate) if noise_path else None
                z = perturb(y, condition, frontend.sample_rate, noise)
                partial = cache / f".{name}.tmp.npz"  # renamed whole: a stop mid-write leaves no broken cache
                np.savez(partial, logmel=log_mel(z, frontend), gains=frame_gains_db(z, frontend))
                os.replace(partial, target)
            with np.load(target) as f:
                out[condition].append((f["logmel"], f["gains"]))
    return out


def noise_for(path: Path, noise_paths: list[Path]) -> Path:
    """The noise clip a clip is heard with: drawn from the whole pool by the clip's file name, so it is the same
    whichever fold, run or order the clip is scored in, and the folds together hear the whole pool."""
    draw = int(hashlib.sha256(Path(path).name.encode()).hexdigest(), 16)
    return noise_paths[draw % len(noise_paths)]


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def accuracy_table(predict, features: dict, labels: np.ndarray, frontend: FrontendConfig,
                   activity: ActivityConfig) -> dict[str, float]:
    """{condition: clip accuracy}; predict((N, T, M) windows) -> (N, C) logits."""
    table = {}
    for condition, clips in features.items():
        correct = []
        for (logmel, gains), label in zip(clips, labels):
            probs = softmax(predict(patches(logmel, frontend)[0]))  # (N, C)
            active = window_activity_of(logmel, frontend, activity, gains)
            correct.append(probs[voting_windows(active)].mean(axis=0).argmax() == label)
        table[condition] = float(np.mean(correct))
    return table
