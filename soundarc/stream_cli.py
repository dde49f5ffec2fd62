"""`soundarc stream FILE --url ws://HOST:PORT/stream`: play an audio file to a server as a live
stream (at real-time pace, or `--fast`) and print each window's answer, the events and the summary."""

from __future__ import annotations

import argparse
import json
import sys
import time

from soundarc.cli import at_least


def add_arguments(parser) -> None:
    parser.add_argument("file", help="an audio file (WAV, FLAC, Ogg, MP3, AIFF)")
    parser.add_argument("--url", default="ws://127.0.0.1:3000/stream", help="the server's stream route")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not at real-time pace")
    parser.add_argument("--top-k", type=at_least(1), default=3, help="classes ranked per window")
    parser.add_argument("--open-set", action=argparse.BooleanOptionalAction, default=True,
                        help="answer 'unknown' for sounds far from every class (--no-open-set: never)")
    parser.add_argument("--threshold-rad", type=float, help="answer 'unknown' beyond this angle (None: the model's)")
    parser.add_argument("--chunk-ms", type=at_least(1), default=100, help="audio per message")
    parser.add_argument("--json", action="store_true", help="print the server's messages as JSON lines")


def run(args) -> int:
    import logging

    import httpx
    import numpy as np
    import soundfile as sf

    from soundarc.client import Client, ServerError

    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        audio, rate = sf.read(args.file, dtype="float32", always_2d=True)  # (n, channels)
    except (OSError, RuntimeError) as e:  # libsndfile errors are RuntimeErrors
        raise SystemExit(f"soundarc stream: cannot read {args.file}: {e}") from None
    pcm = np.ascontiguousarray(audio).astype("<f4")
    step = max(1, rate * args.chunk_ms // 1000)

    def chunks():  # at real-time pace unless --fast: never ahead of the audio's own clock
        started = time.monotonic()
        for i in range(0, len(pcm), step):
            yield pcm[i:i + step].tobytes()
            if not args.fast:
                time.sleep(max(0.0, (i + step) / rate - (time.monotonic() - started)))

    url = args.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).removesuffix("/stream")
    try:
        with Client(url, timeout_s=60) as client:
            for message in client.stream(chunks(), int(rate), "f32le", int(pcm.shape[1]), args.top_k, args.open_set,
                                         args.threshold_rad):
                show(message, args.json)
    except ServerError as e:
        print(f"soundarc stream: closed {e.status}: {e.message}", file=sys.stderr)
        return 1
    except httpx.TransportError as e:  # no server there, or the connection dropped
        print(f"soundarc stream: cannot reach {url}: {e}", file=sys.stderr)
        return 1
    return 0


def show(message: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(message), flush=True)
        return
    kind = message["type"]
    if kind == "ready":
        print(f"streaming to {message['model']['id']} (windows of {message['window_s']} s every {message['hop_s']} s)")
    elif kind == "window":
        score = "" if message["score"] is None else f" {100 * message['score']:.0f} %"
        print(f"{message['start_s']:8.2f} s  {message['label']}{score}", flush=True)
    elif kind == "event":
        print(f"  event {message['label']}: {message['start_s']:.2f}-{message['end_s']:.2f} s", flush=True)
    elif kind == "summary":
        score = "" if message["score"] is None else f" ({100 * message['score']:.0f} %)"
        events = len(message.get("events", []))
        print(f"summary: {message['label']}{score}, {message['duration_s']} s, {message['activity']['windows']} windows, "
              f"{events} event{'' if events == 1 else 's'}")
