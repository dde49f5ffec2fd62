"""A small typed client for a soundarc server, over httpx: every route, errors as exceptions.

    from soundarc.client import Client

    with Client("http://127.0.0.1:3000") as server:
        answer = server.classify("dog.wav", top_k=3)
        print(answer.label, answer.score, answer.ranking)      # "dog" 0.93 [("dog", 0.93), ...]
        vector = server.embed("dog.wav").embedding              # list of floats, or None for silence
        server.enrol("door knock", ["knock1.wav", "knock2.wav"])
        for message in server.stream(pcm_chunks, sample_rate=16000):   # ws /stream: windows, events,
            print(message)                                               # then the summary

Audio is a path or bytes. A server error raises `ServerError` (its HTTP status, kind and message);
503 (overloaded or starting) is retried after its Retry-After, `retries` times. No server, a connection
lost or a server silent for `timeout_s` raise httpx.TransportError. Needs only httpx and
httpx-ws (`pip install 'soundarc[client]'`).
"""

from __future__ import annotations

import contextlib
import math
import queue
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from socket import SHUT_RDWR, SO_SNDTIMEO, SOL_SOCKET
from urllib.parse import quote

import httpx

Audio = str | Path | bytes
NOTHING_YET = (queue.Empty, TimeoutError)  # what httpx-ws's receive(timeout) raises: Empty before 0.10, TimeoutError from it
STREAM_MESSAGE_BYTES = 1 << 20  # the most PCM one WebSocket message carries (uvicorn closes 1009 a message over 16 MiB)


class ServerError(Exception):
    """The server's JSON error: `status` (HTTP), `kind` (e.g. UndecodableAudio), `message`."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(f"{status} {kind}: {message}")
        self.status, self.kind, self.message = status, kind, message


@dataclass(frozen=True)
class Classification:
    label: str  # a class, "unknown" or "silence"
    score: float | None  # P(label) among the known classes; None for unknown and silence
    ranking: list[tuple[str, float]]  # the top_k classes, best first
    activity: dict  # {"active_windows", "windows"}
    duration_s: float
    warnings: list[str]  # what was wrong with a file that decoded only in part
    open_set: dict | None = None  # {"unknown", "nearest_label", "angle_rad", "threshold_rad"}
    windows: list[dict] | None = None  # with windows=True: {"start_s", "end_s", "label", "score"}
    events: list[dict] | None = None  # with events=True: {"label", "start_s", "end_s", "score"}
    spectrogram: dict | None = None  # with spectrogram=True: {"columns_per_s", "n_mels", "dynamic_range_db", "values"}
    raw: dict = field(default_factory=dict, repr=False)  # the whole JSON answer


@dataclass(frozen=True)
class Embedding:
    embedding: list[float] | None  # L2-normalised; None when no window holds sound
    dim: int
    activity: dict
    duration_s: float
    warnings: list[str]
    raw: dict = field(default_factory=dict, repr=False)


class Client:
    def __init__(self, url: str = "http://127.0.0.1:3000", timeout_s: float = 150.0, retries: int = 2):
        """`timeout_s` is longer than the server's own limit (SOUNDARC_REQUEST_TIMEOUT_S, 120 s): its 504 comes first."""
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s)
        self.retries = retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- audio ----------------------------------------------------------------------------------
    def classify(self, audio: Audio, top_k: int = 5, windows: bool = False, open_set: bool = True,
                 threshold_rad: float | None = None, events: bool = False, spectrogram: bool = False
                 ) -> Classification:
        """The clip's answer; `threshold_rad`: this request's "unknown" angle (None: the model's);
        `events`: its sound events too; `spectrogram`: its log-mel as at most 600 columns of 0-255."""
        body = self._post("/classify", [audio], {"top_k": top_k, "windows": windows, "open_set": open_set,
                                                 "threshold_rad": threshold_rad, "events": events or None,
                                                 "spectrogram": spectrogram or None})
        with _answer_of("/classify", body):
            return Classification(body["label"], body["score"], [(r["label"], r["score"]) for r in body["ranking"]],
                                  body["activity"], body["duration_s"], body["warnings"], body.get("open_set"),
                                  body.get("windows"), body.get("events"), body.get("spectrogram"), body)

    def embed(self, audio: Audio, windows: bool = False) -> Embedding:
        body = self._post("/embed", [audio], {"windows": windows})
        with _answer_of("/embed", body):
            return Embedding(body["embedding"], body["dim"], body["activity"], body["duration_s"], body["warnings"], body)

    def search(self, audio: Audio, top_k: int = 5) -> list[dict]:
        """The most similar indexed items: {"id", "label", "similarity", ...}, best first."""
        body = self._post("/search", [audio], {"top_k": top_k})
        with _answer_of("/search", body):
            return body["results"]

    # -- classes --------------------------------------------------------------------------------
    def classes(self) -> list[dict]:
        """The model's classes and the enrolled ones: {"label", "kind", ...}."""
        body = self._request("GET", "/classes")
        with _answer_of("/classes", body):
            return body["classes"]

    def enrol(self, label: str, examples: list[Audio], margin: float | None = None) -> dict:
        """A new class from 1-20 example clips; `margin`: its own enrolment margin (None: the model's)."""
        return self._post("/classes", examples, {"label": label, "margin": margin})

    def delete_class(self, label: str) -> dict:
        return self._request("DELETE", f"/classes/{quote(label, safe='')}")  # '%', '?', '#' and '/' escaped too

    # -- live audio -----------------------------------------------------------------------------
    def stream(self, chunks, sample_rate: int, encoding: str = "pcm_s16le", channels: int = 1, top_k: int = 5,
               open_set: bool = True, threshold_rad: float | None = None):
        """Send `chunks` (bytes of interleaved PCM, as they come: a generator may pace them) to ws
        /stream; yields the server's messages as they arrive ("ready", "window", "event", and last
        "summary"). A chunk over STREAM_MESSAGE_BYTES goes as several messages (the server's limit is
        16 MiB a message). A close other than 1000 raises ServerError with the close code as its status;
        a connection lost, or a server silent for the client's timeout (a send blocked: up to twice that),
        raises httpx.TransportError."""
        from httpx_ws import WebSocketDisconnect, WebSocketUpgradeError, connect_ws

        setup = _given(sample_rate=sample_rate, encoding=encoding, channels=channels, top_k=top_k, open_set=open_set,
                       threshold_rad=threshold_rad)
        wait_s = self.http.timeout.read
        lost = _connection_lost()
        with contextlib.ExitStack() as stack:
            try:
                ws = stack.enter_context(connect_ws("/stream", self.http))
            except WebSocketUpgradeError as e:  # not a soundarc server there, or not at this base URL
                raise ServerError(e.response.status_code, "UpgradeRefused",
                                  f"{e.response.request.url} did not accept a WebSocket") from None
            _shut_down_on_close(ws.stream, wait_s)
            try:
                ws.send_json(setup)
                yield _received(ws, wait_s)  # {"type": "ready", ...}
                for chunk in chunks:
                    for at in range(0, len(chunk), STREAM_MESSAGE_BYTES):  # the server joins a sample split between two
                        ws.send_bytes(chunk[at : at + STREAM_MESSAGE_BYTES])
                    while (message := _ready_message(ws)) is not None:
                        yield message
                ws.send_json({"type": "end"})
                while True:
                    message = _received(ws, wait_s)
                    yield message
                    if message["type"] == "summary":
                        return
            except WebSocketDisconnect as e:
                raise _stream_closed(e) from None
            except lost as e:  # a send after the server closed with a code (queued) is that close; else the link broke
                _raise_queued_close(ws)
                raise httpx.ReadError(f"the connection to the server was lost mid-stream ({type(e).__name__})") from None

    # -- the service ----------------------------------------------------------------------------
    def ready(self) -> dict:
        return self._request("GET", "/readyz")

    def stats(self) -> dict:
        return self._request("GET", "/stats")

    # -- plumbing -------------------------------------------------------------------------------
    def _post(self, route: str, clips: list[Audio], fields: dict) -> dict:
        files = [("audio", _upload(clip, i)) for i, clip in enumerate(clips)]
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in _given(**fields).items()}
        return self._request("POST", route, files=files, data=data)

    def _request(self, method: str, route: str, **kw) -> dict:
        for attempt in range(self.retries + 1):
            response = self.http.request(method, route, **kw)
            if response.status_code == 503 and attempt < self.retries:
                time.sleep(_retry_after(response.headers.get("Retry-After")))
                continue
            break
        if response.is_success:
            try:
                return response.json()
            except ValueError:  # not soundarc's answer (a proxy's page, say)
                raise ServerError(response.status_code, "HTTPError", f"not JSON: {response.text[:500]}") from None
        try:
            error = response.json()
            raise ServerError(response.status_code, error["error"], error["message"])
        except (ValueError, KeyError, TypeError):
            raise ServerError(response.status_code, "HTTPError", response.text[:500]) from None


@contextlib.contextmanager
def _answer_of(route: str, body):
    """Reading a success's JSON: one that is not soundarc's answer (a proxy's JSON, say) is a ServerError, not a KeyError."""
    try:
        yield
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ServerError(200, "UnexpectedAnswer",
                          f"{route} answered JSON that is not soundarc's ({type(e).__name__} {e}): {str(body)[:300]}") from None


def _retry_after(value: str | None, longest_s: float = 30.0) -> float:
    """The seconds a 503's Retry-After asks for, within [0, longest_s]; 1 where it is absent or a date."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return 1.0
    return min(max(seconds, 0.0), longest_s) if math.isfinite(seconds) else 1.0


def _received(ws, wait_s: float | None) -> dict:
    """The server's next message, waiting at most `wait_s` (None: for ever)."""
    try:
        return ws.receive_json(timeout=wait_s)
    except NOTHING_YET:
        raise httpx.ReadTimeout(f"the server sent nothing for {wait_s:g} s") from None


def _connection_lost() -> tuple[type[Exception], ...]:
    """What httpx-ws raises when a send fails mid-stream: its network error, a send after the connection began
    closing (wsproto), or a write that failed or timed out (httpcore)."""
    import httpcore
    from httpx_ws import WebSocketNetworkError
    from wsproto.utilities import LocalProtocolError

    return WebSocketNetworkError, LocalProtocolError, httpcore.WriteError


def _stream_closed(e) -> ServerError:
    """httpx-ws's WebSocketDisconnect as ServerError: the close code as its status, and the reason."""
    return ServerError(e.code, "StreamClosed", e.reason or "the server closed the stream")


def _raise_queued_close(ws) -> None:
    """The server's close, if it came before a send failed, as ServerError (its code and reason)."""
    from httpx_ws import WebSocketDisconnect, WebSocketNetworkError

    try:
        while True:
            ws.receive(timeout=0)
    except WebSocketDisconnect as e:
        raise _stream_closed(e) from None
    except (*NOTHING_YET, WebSocketNetworkError):
        return


def _shut_down_on_close(stream, wait_s: float | None) -> None:
    """httpx-ws closes its stream (at the end, on a failed write, on a keepalive timeout) while its reading
    thread is blocked in a read that closing the socket does not wake: the process could not exit. Shut the
    socket down before it is closed. And a send that waits `wait_s` for room (a server that stopped reading)
    fails instead of blocking for ever (httpcore writes without a timeout; SO_SNDTIMEO bounds the send; httpx-ws's
    close frame may wait as long again)."""
    sock = stream.get_extra_info("socket")
    if sock is None:
        return
    if wait_s and sys.platform != "win32":  # Windows reads SO_SNDTIMEO as milliseconds in a DWORD
        seconds = int(wait_s)
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_SOCKET, SO_SNDTIMEO, struct.pack("ll", seconds, int((wait_s - seconds) * 1e6)))
    close = stream.close

    def shut_down_then_close() -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(SHUT_RDWR)
        close()

    stream.close = shut_down_then_close


def _ready_message(ws) -> dict | None:
    """A message the server has already sent, or None (never waits)."""
    try:
        return ws.receive_json(timeout=0.001)
    except NOTHING_YET:
        return None


def _upload(clip: Audio, index: int) -> tuple[str, bytes, str]:
    if isinstance(clip, bytes):
        return f"clip-{index + 1}", clip, "application/octet-stream"
    path = Path(clip)
    return path.name, path.read_bytes(), "application/octet-stream"


def _given(**fields) -> dict:
    """The fields that were given: None means the server's default, so it is not sent (an older
    server refuses fields it does not know)."""
    return {k: v for k, v in fields.items() if v is not None}
