"""The path from bytes to windows, per format and clip length, stage by stage (issue 17).

    python benchmarks/pipeline_profile.py [--clips 12]

Real ESC-10 clips (Ogg Vorbis, 44.1 kHz) re-encoded as FLAC, 16-bit WAV and 128 kbit/s MP3 at
44.1 kHz, 5 s as they are and 30 s (six clips joined). Per stage, median ms per clip over
`--clips` clips, one thread: read (container decode to samples at the file's rate, mono), resample
to 22.05 kHz with soxr at each quality (HQ is what core.audio uses), log-mel, activity (frame
levels, windows), and the whole of core.clip.prepare. Also each cheaper resampling quality's
largest log-mel difference from HQ. Writes reports/pipeline_profile.json and prints a table.
"""

import argparse
import io
import json
import time

import numpy as np
import soundfile as sf
import soxr
from _data import REPORTS, machine, require_data

from core.activity import ActivityConfig, active_frames, frame_gains_db, frame_levels, window_activity
from core.audio import decode
from core.clip import prepare
from core.features import FrontendConfig, log_mel, patches

FORMATS = {"ogg": ("OGG", "VORBIS"), "flac": ("FLAC", "PCM_16"), "wav": ("WAV", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III")}
QUALITIES = ("HQ", "MQ", "LQ")


def encode(y: np.ndarray, rate: int, fmt: str) -> bytes:
    out = io.BytesIO()
    container, subtype = FORMATS[fmt]
    sf.write(out, y, rate, format=container, subtype=subtype)
    return out.getvalue()


def median_ms(fn, items) -> float:
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - started)
    return round(1000 * float(np.median(times)), 2)


def stages(files: list[bytes], fe: FrontendConfig, activity: ActivityConfig) -> dict:
    raw = [decode(f, sf.info(io.BytesIO(f)).samplerate) for f in files]  # mono at the file's rate
    rate = sf.info(io.BytesIO(files[0])).samplerate
    waves = [soxr.resample(y, rate, fe.sample_rate, quality="HQ").astype(np.float32) for y in raw]
    mels = [log_mel(w, fe) for w in waves]

    def act(pair):
        w, m = pair
        _, starts = patches(m, fe)
        levels = frame_levels(m, fe, frame_gains_db(w, fe))
        window_activity(active_frames(levels, fe, activity), starts, fe, activity)

    row = {"read": median_ms(lambda f: decode(f, rate), files)}
    for q in QUALITIES:
        row[f"resample_{q}"] = median_ms(lambda y, q=q: soxr.resample(y, rate, fe.sample_rate, quality=q), raw)
    row["log_mel"] = median_ms(lambda w: log_mel(w, fe), waves)
    row["windows_activity"] = median_ms(act, list(zip(waves, mels)))
    row["prepare_total"] = median_ms(lambda f: prepare(f, fe, activity), files)
    for q in QUALITIES[1:]:
        diffs = [np.abs(log_mel(soxr.resample(y, rate, fe.sample_rate, quality=q).astype(np.float32), fe) - m).max()
                 for y, m in zip(raw, mels)]
        row[f"log_mel_max_diff_{q}_vs_HQ"] = float(np.max(diffs))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=12)
    args = parser.parse_args()
    fe, activity = FrontendConfig(), ActivityConfig()
    paths = sorted((require_data("esc10") / "audio").glob("*.ogg"))[: 6 * args.clips]
    clips = [decode(p, 44_100) for p in paths]  # 5 s each, 44.1 kHz
    long = [np.concatenate(clips[i:i + 6]) for i in range(0, len(clips) - 5, 6)]
    report = {"machine": machine(), "rows": []}
    for fmt in FORMATS:
        for seconds, waves in ((5, clips[: args.clips]), (30, long)):
            files = [encode(y, 44_100, fmt) for y in waves]
            report["rows"].append({"format": fmt, "seconds": seconds, "clips": len(files), **stages(files, fe, activity)})
            print(report["rows"][-1], flush=True)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "pipeline_profile.json").write_text(json.dumps(report, indent=1) + "\n")
    keys = [k for k in report["rows"][0] if k not in ("format", "seconds", "clips")]
    print("| format | s | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    for r in report["rows"]:
        print(f"| {r['format']} | {r['seconds']} | " + " | ".join(f"{r[k]:.3g}" for k in keys) + " |")


if __name__ == "__main__":
    main()
