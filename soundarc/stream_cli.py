"""`soundarc stream FILE --url ws://HOST:PORT/stream`: play an audio file to a server as a live
stream (at real-time pace, or `--fast`) and print each window's answer, the events and the summary."""

from __future__ import annotations

import json
import sys
import time


def add_arguments(parser) -> None:
    parser.add_argument("file", help="an audio file (WAV, FLAC, Ogg, MP3, AIFF)")
    parser.add_argument("--url", default="ws://127.0.0.1:3000/stream", help="the server's stream route")
    parser.add_argument("--fast", action="store_true", help="send as fast as possible, not at real-time pace")
    parser.add_argument("--top-k", type=int, default=3, help="classes ranked per window")
    parser.add_argument("--chunk-ms", type=int, default=100, help="audio per message")
    parser.add_argument("--json", action="store_true", help="print the server's messages as JSON lines")


def run(args) -> int:
    import logging

    import httpx
    import numpy as np
    import soundfile as sf
    from httpx_ws import WebSocketDisconnect, connect_ws

    logging.getLogger("httpx").setLevel(logging.WARNING)
    audio, rate = sf.read(args.file, dtype="float32", always_2d=True)  # (n, channels)
    pcm = np.ascontiguousarray(audio).astype("<f4")
    step = max(1, rate * args.chunk_ms // 1000)
    setup = {"sample_rate": int(rate), "encoding": "f32le", "channels": int(pcm.shape[1]), "top_k": args.top_k}
    url = args.url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    with httpx.Client(timeout=60) as client, connect_ws(url, client) as ws:
        ws.send_text(json.dumps(setup))
        show(ws.receive_json(), args.json)
        started = time.monotonic()
        for i in range(0, len(pcm), step):
            ws.send_bytes(pcm[i:i + step].tobytes())
            if not args.fast:  # real-time pace: never ahead of the audio's own clock
                time.sleep(max(0.0, (i + step) / rate - (time.monotonic() - started)))
            while (message := _poll(ws)) is not None:
                show(message, args.json)
        ws.send_text(json.dumps({"type": "end"}))
        try:
            while True:
                show(ws.receive_json(), args.json)
        except WebSocketDisconnect as e:
            if e.code != 1000:
                print(f"soundarc stream: closed {e.code}: {e.reason}", file=sys.stderr)
                return 1
    return 0


def _poll(ws):
    """A message the server has sent already, or None (never waits)."""
    from queue import Empty

    try:
        return ws.receive_json(timeout=0.001)
    except (Empty, TimeoutError):
        return None


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
        print(f"summary: {message['label']}{score}, {message['duration_s']} s, {message['windows']} windows, "
              f"{len(message.get('events', []))} events")
