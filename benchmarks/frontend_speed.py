"""Front-end speed: soundarc's log_mel against the direct librosa call on real 5 s clips.

    python benchmarks/frontend_speed.py [--clips 40] [--repeats 5]

Writes reports/frontend_speed.json and prints a table. Both sides get the same decoded,
resampled waveform; the parity of the two is re-checked on every clip.
"""

import argparse
import json
import time

import librosa
import numpy as np
from _data import REPORTS, machine, require_data

from core.audio import decode
from core.features import FrontendConfig, log_mel, normalise


def librosa_log_mel(y, cfg):
    mel = librosa.feature.melspectrogram(
        y=normalise(y, cfg), sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=cfg.win_length,
        hop_length=cfg.hop_length, window="hamming", center=True, power=2.0, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm=None,
    )
    return np.log10(mel + cfg.log_offset).T


def best_time(fn, clips, repeats):
    """Best of `repeats` passes over all clips, in ms per clip."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for y in clips:
            fn(y)
        best = min(best, (time.perf_counter() - start) / len(clips) * 1000)
    return best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cfg = FrontendConfig()
    audio = require_data("esc10") / "audio"
    # One segment per clip: longer audio is normalised per segment, which the plain librosa call is not.
    clips = [decode(p, cfg.sample_rate)[: cfg.segment_samples] for p in sorted(audio.glob("*.ogg"))[: args.clips]]
    max_err = max(float(np.abs(log_mel(y, cfg) - librosa_log_mel(y, cfg)).max()) for y in clips)
    ours = best_time(lambda y: log_mel(y, cfg), clips, args.repeats)
    ref = best_time(lambda y: librosa_log_mel(y, cfg), clips, args.repeats)
    report = {
        "clips": len(clips), "clip_seconds": 5.0, "soundarc_ms_per_clip": round(ours, 3),
        "librosa_ms_per_clip": round(ref, 3), "speedup": round(ref / ours, 2),
        "max_abs_log_diff": max_err, "machine": machine(),
        "librosa": librosa.__version__, "numpy": np.__version__,
    }
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "frontend_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"| front-end | ms per 5 s clip |\n|---|---|\n| soundarc log_mel | {ours:.2f} |\n| librosa | {ref:.2f} |")
    print(f"speed-up {ref / ours:.2f}x, max |diff| {max_err:.2e} (log10 domain)")


if __name__ == "__main__":
    main()
