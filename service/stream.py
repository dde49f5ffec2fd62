"""`ws://HOST:PORT/stream`: live audio in, an answer for every window out, the clip's answer at the end.

    client: {"sample_rate": 16000, "encoding": "pcm_s16le" | "f32le", "channels": 1, "top_k": 5,
             "open_set": true, "threshold_rad": null}           (first message, text JSON)
    server: {"type": "ready", "model": {...}, "window_s": 1.01, "hop_s": 0.5}
    client: binary messages of interleaved PCM, any length up to 16 MiB (a sample split between two is joined;
            a longer message is closed 1009 by the WebSocket layer)
    server: {"type": "window", "start_s", "end_s", "label", "score", "labels": [{"label", "score"}]}
            for every window as soon as it is final (core.stream: the upload path's windows);
            {"type": "event", "label", "start_s", "end_s", "score"} once an event is over
    client: {"type": "end"}
    server: {"type": "summary", ...the answer POST /classify gives for the same audio (its activity counts
             the windows)..., "duration_s", "events"}, then close 1000

A window's answer is the answer to a clip made of that window alone (a class, "unknown" or
"silence"). Windows go through the service's cross-request batcher: streams and uploads share
model calls. Close codes: 1008 a bad set-up message (the reason says which field), options in the URL or a stream
over the duration limit (a retry would not help); 1003 audio before the set-up or the end message sent as binary;
1007 a stream ending inside a sample or a frame with NaN, infinite or overflowing ones; 1013 over
SOUNDARC_MAX_STREAMS streams, the service starting or the batcher overloaded; 1009 a message over 16 MiB; 1001 no
audio (a message with a whole sample) for SOUNDARC_STREAM_IDLE_S seconds; 1011 an error of the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace

import anyio
import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from core import errors
from core.answer import AnswerOptions, answer, round_score, window_answers, window_probabilities
from core.events import detect, live_cutoff_s
from core.stream import StreamFrontend

log = logging.getLogger("soundarc")
ENCODINGS = {"pcm_s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}


class StreamSession:
    """One stream: its set-up, its front-end, and the window outputs kept for the events and the summary.
    It answers with the classes enrolled when it was set up, to its end: a class enrolled or deleted
    meanwhile would change the events of windows already answered."""

    def __init__(self, service, settings, setup: dict):
        self.service, self.artifact = service, service.artifact
        self.rate, self.channels, self.dtype, self.options = _check_setup(setup, settings)
        self.frontend = StreamFrontend(self.rate, self.artifact.frontend, self.artifact.activity)
        self.classes = service.current_classes()  # None: the model's classes alone
        self.labels = self.artifact.labels if self.classes is None else self.classes.labels
        # per batch of windows: (N, C) logits, (N, D) embeddings, (N,) activity and starts, (N, K) probabilities
        self.logits, self.embeddings, self.active, self.starts, self.probs = [], [], [], [], []
        self.sent_events: set[tuple] = set()
        self.received = 0  # samples received, at the stream's rate
        self.partial = b""  # the first bytes of a sample split between messages

    def ready(self) -> dict:
        fe = self.artifact.frontend
        return {"type": "ready", "model": self.service.model_info(), "window_s": round(fe.patch_seconds, 3),
                "hop_s": round(fe.eval_hop_frames / fe.frames_per_s, 3)}

    def samples(self, data: bytes) -> np.ndarray:
        """A binary message -> (n, channels) float32 of its whole samples; the bytes of a sample it splits
        wait for the next message (a client may cut its PCM anywhere)."""
        data = self.partial + data
        frame = self.dtype.itemsize * self.channels
        whole = len(data) - len(data) % frame
        data, self.partial = data[:whole], data[whole:]
        x = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.channels)
        if self.dtype.kind == "i":
            return x.astype(np.float32) / 32768.0
        if not np.isfinite(x).all():
            raise _Close(1007, "the audio holds NaN or infinite samples")
        return x.astype(np.float32)

    async def prepare(self, step, *args):
        """A front-end step off the event loop, within the threads uploads prepare in (the worker's share
        of the cores: a stream's audio waits its turn, as an upload's does)."""
        return await anyio.to_thread.run_sync(step, *args, limiter=self.service.prepare_limiter)

    async def windows(self, windows) -> list[dict]:
        """Run new windows through the batcher; their messages, and those of events now over."""
        if not len(windows.patches):
            return []
        logits, embeddings = await self.service.batcher.infer(windows.patches)
        probs = window_probabilities(logits, embeddings, self.classes)  # (N, K), once a window: kept for the events
        for kept, new in ((self.logits, logits), (self.embeddings, embeddings), (self.active, windows.active),
                          (self.starts, windows.starts_s), (self.probs, probs)):
            kept.append(new)
        timeline = window_answers(probs, embeddings, windows.active, windows.starts_s, self.artifact.frontend.patch_seconds,
                                  self.labels, self.classes, self.options, self.frontend.duration_s)  # as /classify's timeline
        messages = [{"type": "window", "start_s": round(w.start_s, 3), "end_s": round(w.end_s, 3), "label": w.label,
                     "score": round_score(w.score), "labels": [{"label": k, "score": round(p, 6)} for k, p in w.ranking]}
                    for w in timeline]
        return messages + self._events(final=False)

    def summary(self) -> dict:
        fe = self.artifact.frontend
        options = replace(self.options, events=self.artifact.events)
        outputs = (np.concatenate(kept) for kept in (self.logits, self.embeddings, self.active, self.starts))
        result = answer(*outputs, fe.patch_seconds, self.artifact.labels, self.classes,
                        options, self.frontend.all_levels(), fe, self.frontend.duration_s)
        body = result.to_dict()
        return {"type": "summary", **body, "labels": body["ranking"], "duration_s": round(self.frontend.duration_s, 3)}

    def _events(self, final: bool) -> list[dict]:
        """Events of the stream so far that can no longer change (`final`: the stream has ended; else those that
        ended well before the windows the median filter of the next ones still reaches)."""
        cfg = self.artifact.events
        window_s = self.artifact.frontend.patch_seconds
        probs, active, starts = (np.concatenate(kept) for kept in (self.probs, self.active, self.starts))
        final_before_s = float("inf") if final else live_cutoff_s(starts, window_s, cfg)
        out = []
        for event in detect(probs, active, starts, window_s, self.labels, cfg, self.frontend.all_levels(),
                            self.artifact.frontend, final_before_s, self.frontend.duration_s):
            key = (event.label, round(event.start_s, 2))
            if key not in self.sent_events:
                self.sent_events.add(key)
                out.append({"type": "event", **event.to_dict()})
        return out


class _Close(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


def close_reason(text: str) -> str:
    """A close frame's reason: at most 123 bytes of UTF-8 (more is a protocol error that drops the
    connection with no reason at all), cut on a character's boundary."""
    return text.encode()[:123].decode("utf-8", "ignore")


async def serve_stream(websocket: WebSocket, service, settings, streams: list) -> None:
    """One WebSocket connection, from accept to close. `service`: the SoundArc instance (None while it
    starts); `streams`: the sessions open now (shared by the connections)."""
    await websocket.accept()
    try:
        if service is None:
            raise _Close(1013, "the service is starting: retry shortly")
        if websocket.url.query:  # the options are the set-up message's, as an upload's are its form's
            raise _Close(1008, f"the stream takes its options in the set-up message, not the URL: got ?{websocket.url.query}")
        session = StreamSession(service, settings, _setup_message(await _receive(
            websocket, settings.stream_idle_s, f"no setup message for {settings.stream_idle_s:g} s")))
        if len(streams) >= settings.max_streams:  # counted once set up: a connection alone costs little
            raise _Close(1013, f"{len(streams)} streams are open (SOUNDARC_MAX_STREAMS={settings.max_streams}): "
                               "retry later")
        streams.append(session)
        try:
            await websocket.send_json(session.ready())
            await _loop(websocket, session, settings)
        finally:
            streams.remove(session)
    except _Close as e:
        log.info("stream closed %d: %s", e.code, e.reason)
        await websocket.close(e.code, close_reason(e.reason))
    except errors.SoundarcError as e:  # what an upload answers with its HTTP status (Overloaded: 503)
        code = (1013 if e.status_code == 503 else 1007 if isinstance(e, errors.InvalidSamples)
                else 1008 if e.status_code < 500 else 1011)
        log.info("stream closed %d: %s", code, e)
        await websocket.close(code, close_reason(str(e)))
    except WebSocketDisconnect:
        pass


async def _loop(websocket: WebSocket, session: StreamSession, settings) -> None:
    idle_until = time.monotonic() + settings.stream_idle_s  # messages without a whole sample do not count as audio
    while True:
        message = await _receive(websocket, idle_until - time.monotonic(), f"no audio for {settings.stream_idle_s:g} s")
        if message.get("bytes") is not None:
            if message["bytes"][:1] == b"{" and _is_end(message["bytes"].decode("utf-8", "replace")):
                raise _Close(1003, 'the end message {"type": "end"} goes as a text message, not binary')  # was audio
            samples = session.samples(message["bytes"])  # (n, channels)
            session.received += len(samples)  # at the stream's rate: the resampler's output lags behind it
            if session.received / session.rate > settings.max_duration_s:
                raise _Close(1008, f"the stream is longer than the limit of {settings.max_duration_s:g} s")
            windows = await session.prepare(session.frontend.push, samples)
            for out in await session.windows(windows):
                await websocket.send_json(out)
            if len(samples):  # from now: the time the server took for this audio is not the client's idling
                idle_until = time.monotonic() + settings.stream_idle_s
        elif _is_end(message.get("text")):
            if session.partial:
                raise _Close(1007, f"the stream ended {len(session.partial)} bytes into a sample: not whole "
                                   f"{session.channels}-channel {session.dtype.itemsize}-byte samples")
            windows = await session.prepare(session.frontend.end)  # a resampler gives its last samples now
            if session.frontend.samples == 0:
                raise _Close(1007, "the stream ended before any audio")
            for out in await session.windows(windows):
                await websocket.send_json(out)
            for out in session._events(final=True):
                await websocket.send_json(out)
            await websocket.send_json(session.summary())
            await websocket.close(1000)
            return
        else:
            raise _Close(1008, 'expected binary PCM or the text {"type": "end"}')


async def _receive(websocket: WebSocket, timeout_s: float, timed_out: str) -> dict:
    """The next message; none within `timeout_s` closes the stream (1001) with the reason `timed_out`."""
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout=max(timeout_s, 0.0))
    except TimeoutError:
        raise _Close(1001, timed_out) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    return message


def _setup_message(message: dict) -> dict:
    if message.get("text") is None:
        raise _Close(1003, "the first message must be the text JSON set-up, before any audio")
    try:
        setup = json.loads(message["text"])
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        raise _Close(1008, "the set-up message is not JSON") from None
    if not isinstance(setup, dict):
        raise _Close(1008, "the set-up message must be a JSON object")
    return setup


def _check_setup(setup: dict, settings) -> tuple:
    """(sample rate, channels, numpy dtype, AnswerOptions) of a set-up message; 1008 naming the field."""
    known = {"sample_rate", "encoding", "channels", "top_k", "open_set", "threshold_rad"}
    if set(setup) - known:
        raise _Close(1008, f"unknown set-up fields {sorted(set(setup) - known)}; known: {sorted(known)}")

    def integer(name, lo, hi, default=None):
        value = setup.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise _Close(1008, f"{name} must be an integer from {lo} to {hi}, got {value!r}")
        return value

    rate = integer("sample_rate", 1000, 384_000)
    channels = integer("channels", 1, settings.max_channels, 1)
    top_k = integer("top_k", 1, settings.max_top_k, 5)
    if not isinstance(setup.get("encoding"), str) or setup["encoding"] not in ENCODINGS:
        raise _Close(1008, f"encoding must be one of {list(ENCODINGS)}, got {setup.get('encoding')!r}")
    open_set = setup.get("open_set", True)
    if not isinstance(open_set, bool):
        raise _Close(1008, f"open_set must be true or false, got {open_set!r}")
    threshold = setup.get("threshold_rad")
    if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)):
        raise _Close(1008, f"threshold_rad must be a number or null, got {threshold!r}")
    try:
        options = AnswerOptions(top_k, open_set, threshold_rad=threshold)
    except errors.InvalidParameter as e:
        raise _Close(1008, str(e)) from None
    return rate, channels, ENCODINGS[setup["encoding"]], options


def _is_end(text: str | None) -> bool:
    try:
        return text is not None and json.loads(text) == {"type": "end"}
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return False

