"""Live streams against a running server: lag and how many streams keep up with real time.

    python benchmarks/stream_bench.py --url http://127.0.0.1:3000 [--streams 1 8 32 64] [--seconds 20]

Each stream plays a real clip (ESC-10, looped to --seconds, 16 kHz 16-bit PCM) at real-time pace in
100 ms messages, from its own thread. Lag of a window: the time its answer arrives minus the time
its last sample was sent. A run keeps up when every stream's summary arrives within 2 s of its
end. Writes reports/stream_bench.json.
"""

import argparse
import json
import threading
import time

import httpx
import numpy as np
import soundfile as sf
import soxr
from _data import REPORTS, require_data
from httpx_ws import connect_ws

RATE, CHUNK_S = 16_000, 0.1


def one_stream(url: str, pcm: bytes, out: dict) -> None:
    sent_at = []  # (seconds of audio sent, wall time)
    lags, started = [], time.monotonic()
    with httpx.Client(timeout=120) as client, connect_ws(f"{url}/stream", client) as ws:
        ws.send_text(json.dumps({"sample_rate": RATE, "encoding": "pcm_s16le", "channels": 1}))
        ws.receive_json()
        receiver_done = threading.Event()

        def receive():
            while True:
                message = ws.receive_json()
                now = time.monotonic()
                if message["type"] == "window":
                    last_sample = message["end_s"]
                    sent = next((t for s, t in sent_at if s >= last_sample), now)
                    lags.append(now - sent)
                elif message["type"] == "summary":
                    out["summary_after_end_s"] = now - out["ended_at"]
                    break
            receiver_done.set()

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        step = int(RATE * CHUNK_S) * 2
        for i in range(0, len(pcm), step):
            ws.send_bytes(pcm[i:i + step])
            sent_at.append(((i + step) / 2 / RATE, time.monotonic()))
            time.sleep(max(0.0, (i + step) / 2 / RATE - (time.monotonic() - started)))
        out["ended_at"] = time.monotonic()
        ws.send_text(json.dumps({"type": "end"}))
        receiver_done.wait(120)
    out["lags"] = lags


def run(url: str, n: int, pcm: bytes) -> dict:
    outs = [{} for _ in range(n)]
    threads = [threading.Thread(target=one_stream, args=(url, pcm, o)) for o in outs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lags = np.concatenate([o.get("lags", []) for o in outs])
    late = [o.get("summary_after_end_s", float("inf")) for o in outs]
    return {"streams": n, "windows": int(len(lags)), "lag_p50_s": float(np.percentile(lags, 50)),
            "lag_p95_s": float(np.percentile(lags, 95)), "lag_p99_s": float(np.percentile(lags, 99)),
            "summary_after_end_max_s": float(max(late)), "kept_up": bool(max(late) < 2.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--streams", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    esc10 = require_data("esc10")
    y, sr = sf.read(sorted((esc10 / "audio").glob("*.ogg"))[5], dtype="float32")
    y = np.resize(soxr.resample(y, sr, RATE), int(args.seconds * RATE))
    pcm = (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()
    rows = []
    for n in args.streams:
        rows.append(run(args.url, n, pcm))
        print(json.dumps(rows[-1]), flush=True)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "stream_bench.json").write_text(json.dumps({"seconds": args.seconds, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
