"""`soundarc stream FILE --url ws://HOST:PORT/stream`: play an audio file to a server as a live
stream (at real-time pace, or `--fast`) and print each window's answer, the events and the summary."""

from __future__ import annotations

import argparse
import json
import sys
import time
from urllib.parse import urlsplit, urlunsplit

from core.audio import shortfall
from core.errors import ConfigError
from soundarc.cli import at_least


def add_arguments(parser) -> None:
    parser.add_argument("file", help="an audio file (WAV, FLAC, Ogg, MP3, AIFF; '-': stdin)")
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
    url = server_url(args.url)
    try:
        audio = sf.SoundFile(args.file)
    except (OSError, RuntimeError, ValueError, MemoryError) as e:  # libsndfile errors are RuntimeErrors
        print(f"soundarc stream: cannot read {args.file}: {e}", file=sys.stderr)
        return 1
    step = max(1, audio.samplerate * args.chunk_ms // 1000)

    def chunks():  # read a block at a time, at real-time pace unless --fast: never ahead of the audio's own clock
        started, sent = time.monotonic(), 0
        while (block := _read(audio, step)).size:
            yield np.ascontiguousarray(block, dtype="<f4").tobytes()
            sent += len(block)
            if not args.fast:
                time.sleep(max(0.0, sent / audio.samplerate - (time.monotonic() - started)))
        if not audio.seekable():  # a pipe: its frames are unknown, and it cannot be read again
            return
        if sent < audio.frames:
            print(f"soundarc stream: warning: {args.file} ended after {sent} of the {audio.frames} frames its "
                  "header announces (cut short?)", file=sys.stderr)
        elif cut := _shortfall(args.file, audio.format):  # the reader shortened it without a word
            print(f"soundarc stream: warning: {args.file}: {cut}", file=sys.stderr)

    with audio:
        try:
            with Client(url, timeout_s=60) as client:
                for message in client.stream(chunks(), audio.samplerate, "f32le", audio.channels, args.top_k,
                                             args.open_set, args.threshold_rad):
                    show(message, args.json)
        except Unreadable as e:
            print(f"soundarc stream: cannot read {args.file}: {e}", file=sys.stderr)
            return 1
        except ServerError as e:
            print(f"soundarc stream: closed {e.status}: {e.message}", file=sys.stderr)
            return 1
        except httpx.TransportError as e:  # no server there, or the connection dropped
            print(f"soundarc stream: cannot reach {url}: {e}", file=sys.stderr)
            return 1
    return 0


class Unreadable(Exception):
    """The file could not be read on (a damaged block, a header that promises more than there is)."""


def _read(audio, frames: int):
    """(frames, channels) float32, the file's next block; empty at its end."""
    try:
        return audio.read(frames, dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, MemoryError) as e:
        raise Unreadable(str(e) or type(e).__name__) from None


def _shortfall(path: str, container: str) -> str:
    """core.audio.shortfall of the file, read again from its start; "" where it cannot be."""
    try:
        return shortfall(path, container)
    except (OSError, ValueError):
        return ""


def server_url(url: str) -> str:
    """ws://HOST:PORT/PREFIX/stream (or http://..., with or without /stream or a trailing /) -> the server's
    base URL, http://HOST:PORT/PREFIX. Options are flags, not part of the URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss", "http", "https") or not parts.netloc:
        raise ConfigError(f"--url must be ws://HOST:PORT/stream (or wss://), got {url!r}")
    if parts.query or parts.fragment:
        raise ConfigError(f"--url takes no options ({url!r}): use --top-k, --open-set, --threshold-rad")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/").removesuffix("/stream"), "", ""))


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
