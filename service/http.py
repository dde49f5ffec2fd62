"""ASGI middleware in front of every route: what must be answered before a body is read.

- 503 (with Retry-After) for an upload beyond `max_in_flight` being processed at once by this worker,
  before its body is read: this bounds the memory of buffered uploads to max_in_flight x the upload
  limit per worker;
- 415 for a body that is not multipart/form-data, 413 for a body over the upload limit (from
  Content-Length, or counted while reading), 408 for a body that stalls (no bytes for `body_idle_s`)
  or has not arrived by the deadline (a second before the framework's own plain 504), so that slow
  clients give their slots back;
- 504 in our format for an upload not answered by that deadline: its answer is dropped, but its slot
  stays taken until its work ends (decoding in threads cannot be stopped, and must stay bounded);
- every other error answer becomes our JSON format: plain-text 404 and 405 of BentoML and Starlette
  (with Allow) become JSON;
- a ready /readyz answers JSON naming the model id and the active execution providers;
- `/` serves the web page and `/docs.json` the whole OpenAPI document, in place of BentoML's.

`form_of` is how a route reads its form: parsed once, 400 when malformed, 422 for a url-encoded body (it
cannot hold a file), an unknown or repeated field or an `audio` that is not a file (service.web checks the
other fields' types).
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import re

from core import errors

log = logging.getLogger("soundarc")

UPLOAD_FIELD = "audio"
# BentoML's own pages at these paths (an online-only Swagger page, its partial spec) -> ours
TAKEN_OVER = {"/": "/ui", "/docs.json": "/openapi.json"}
FORM_TYPES = (b"multipart/form-data", b"application/x-www-form-urlencoded")  # a form without a file: 422 (form_of)
ABANDONED = "soundarc.abandoned"  # an upload's scope key: () -> True once its answer is dropped (504, client gone)


class _ClientGone(Exception):
    """The client disconnected before its whole body arrived."""


class RequestGuard:
    def __init__(self, app, max_bytes: int, max_in_flight: int, upload_paths: set[str], ready_info,
                 timeout_s: float = 120.0, body_idle_s: float = 10.0):
        self.app = app
        self.max_bytes = max_bytes
        self.max_in_flight = max_in_flight
        self.deadline_s = max(timeout_s - 1.0, timeout_s / 2)  # ours answers before the framework's plain 504
        self.body_idle_s = body_idle_s
        self.in_flight = 0  # uploads being read or processed now
        self.upload_paths = upload_paths  # the POST routes that take a form upload
        self.ready_info = ready_info  # () -> dict | None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/readyz":
            return await self.app(scope, receive, self._readyz_send(_errors_as_json(scope, send)))
        if scope["path"] in TAKEN_OVER and scope["method"] in ("GET", "HEAD"):
            scope = {**scope, "path": TAKEN_OVER[scope["path"]], "raw_path": TAKEN_OVER[scope["path"]].encode()}
        send = _errors_as_json(scope, send)
        if scope["path"] not in self.upload_paths or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            busy = errors.Overloaded(f"{self.in_flight} requests in flight (limit {self.max_in_flight})")
            return await _reply_unread(send, busy)
        self.in_flight += 1  # given back when its work ends, not when it is answered
        progress = _Progress(send)
        scope = {**scope, ABANDONED: lambda: progress.abandoned}
        task = asyncio.ensure_future(self._guarded(scope, receive, progress))
        task.add_done_callback(lambda done_task: self._upload_done(done_task, progress))
        try:
            done, _ = await asyncio.wait({task}, timeout=self.deadline_s)
        except asyncio.CancelledError:  # the client went away: a body still arriving is dropped, work runs out
            progress.abandoned = True
            if not progress.body_read:
                task.cancel()
            raise
        if done or progress.started:  # answered, or answering: let it finish
            return await task
        if not progress.body_read:  # the body is still trickling in, and nothing runs on it yet
            task.cancel()
            await asyncio.wait({task})  # its slot given back before the answer
            return await _reply(send, errors.RequestTimeout(f"the request body did not arrive within {self.deadline_s:g} s"))
        progress.abandoned = True
        await _reply(send, errors.ProcessingTimeout(f"no answer within {self.deadline_s:g} s"))

    def _upload_done(self, task: asyncio.Task, progress: _Progress) -> None:
        self.in_flight -= 1
        if progress.abandoned and not task.cancelled() and task.exception() is not None:  # nobody awaits it now
            log.warning("an upload abandoned (504, or its client gone) failed afterwards: %r", task.exception())

    async def _guarded(self, scope, receive, progress: _Progress):
        send = progress.send
        headers = dict(scope["headers"])
        if sum(name == b"content-type" for name, _ in scope["headers"]) > 1:  # the route would read another one
            return await _reply_unread(send, errors.BadRequest("the request has more than one Content-Type header"))
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type not in FORM_TYPES:
            shown = content_type.decode("latin-1") or "none"
            return await _reply_unread(send, errors.UnsupportedMediaType(
                f"expected a multipart/form-data upload with the clip in the field '{UPLOAD_FIELD}', got Content-Type {shown}"))
        coding = headers.get(b"content-encoding", b"identity").strip().lower()
        if coding != b"identity":  # the parser would read compressed bytes as the form
            return await _reply_unread(send, errors.UnsupportedMediaType(
                f"the body is sent with Content-Encoding {coding.decode('latin-1')[:40]}: send it uncompressed"))
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await _reply_unread(send, errors.UploadTooLarge(
                f"the request is {int(length)} bytes; the upload limit is {self.max_bytes} bytes"))
        try:
            body = await _read_bounded(receive, self.max_bytes, self.body_idle_s)
        except TimeoutError:
            return await _reply(send, errors.RequestTimeout(f"the request body stalled: no bytes for {self.body_idle_s:g} s"))
        except _ClientGone:  # half a body is not a request: nothing runs on it, nobody hears an answer
            progress.abandoned = True
            return None
        if body is None:  # the rest not read
            over = errors.UploadTooLarge(f"the request is over the upload limit of {self.max_bytes} bytes")
            return await _reply_unread(send, over)
        progress.body_read = True
        watcher = asyncio.ensure_future(_mark_when_gone(receive, progress))  # the client may leave while it runs
        try:
            return await self.app(scope, _replay(body), send)
        finally:
            watcher.cancel()

    def _readyz_send(self, send):
        async def wrapped(message):
            if message["type"] == "http.response.start" and message["status"] == 200:
                info = self.ready_info()
                if info is not None:
                    body = json.dumps({"status": "ready", **info}).encode()
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})
                    wrapped.replaced = True
                    return
            if message["type"] == "http.response.body" and getattr(wrapped, "replaced", False):
                return
            await send(message)

        return wrapped


def error_response(error: errors.SoundarcError):
    """The one HTTP form of an error: its status, its headers, its JSON body (a Starlette response,
    itself an ASGI app)."""
    from starlette.responses import JSONResponse

    log.info("%s %d: %s", error.kind, error.status_code, error)
    return JSONResponse(error.to_dict(), status_code=error.status_code, headers=error.headers)


async def _reply(send, error: errors.SoundarcError) -> None:
    await error_response(error)({"type": "http"}, None, send)


async def _reply_unread(send, error: errors.SoundarcError) -> None:
    """An answer before the body is read: the connection is closed after it (RFC 9110 15.5: else the server
    reads the rest of the body before the next request, and a client that waits for 100-continue never
    sends it, so its next request on the connection is taken for that body)."""
    response = error_response(error)
    response.headers["Connection"] = "close"
    await response({"type": "http"}, None, send)


class _Progress:
    """How far an upload has come: its body read, its answer begun; once abandoned (answered 504 by the
    guard), what its route sends is dropped."""

    def __init__(self, send):
        self.to_client, self.body_read, self.started, self.abandoned = send, False, False, False

    async def send(self, message) -> None:
        if self.abandoned:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.to_client(message)


async def _mark_when_gone(receive, progress: _Progress) -> None:
    """After the whole body, the server's next message is `http.disconnect`: the client has left (or its answer
    has gone out). From then on the upload is abandoned: an enrolment saves nothing."""
    if (await receive())["type"] == "http.disconnect":
        progress.abandoned = True


async def _read_bounded(receive, limit: int, idle_s: float) -> bytes | None:
    """The whole body of a request, or None once it passes `limit`; TimeoutError when no message
    comes for `idle_s`, _ClientGone when the client leaves before its end."""
    chunks, size = [], 0
    while True:
        message = await asyncio.wait_for(receive(), idle_s)
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return None
        if not message.get("more_body"):
            break
    return b"".join(chunks)


@contextlib.asynccontextmanager
async def form_of(request, accepted: tuple[str, ...], repeatable: tuple[str, ...] = ()):
    """The request's multipart form, parsed once and closed after use: only `accepted` fields, each
    once (but those in `repeatable`), the clip field a file."""
    from python_multipart.multipart import parse_options_header
    from starlette.datastructures import UploadFile

    if request.query_params:  # options in the URL would otherwise be ignored without a word
        raise errors.InvalidParameter(f"options go in the form beside the clip, not in the URL: got "
                                      f"?{request.url.query[:80]}; this endpoint accepts {list(accepted)}")
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type == b"application/x-www-form-urlencoded":
        raise errors.InvalidParameter(f"the clip goes in a multipart/form-data body as a file in the field "
                                      f"'{UPLOAD_FIELD}' (curl -F '{UPLOAD_FIELD}=@clip.ogg'), got an "
                                      "application/x-www-form-urlencoded body (what curl --data and --data-binary send)")
    if content_type == b"multipart/form-data" and (boundary := options.get(b"boundary")):
        await _check_complete(request, boundary)
    try:
        form = await request.form()
    except Exception as e:  # noqa: BLE001 - python-multipart and starlette raise several kinds
        reason = str(getattr(e, "detail", e))  # Starlette's HTTPException: without its "400: "
        hint = (" (a part whose headers are malformed, or a header line over 4 KB: a file name of thousands of "
                "characters)") if "Invalid multipart data" in reason else (
                f" (a part without a filename is a text field, at most 1 MB: send the clip as a file, with a filename: "
                f"curl -F '{UPLOAD_FIELD}=@clip.ogg')") if "exceeded maximum size" in reason else ""
        raise errors.BadRequest(f"the form body could not be parsed: {reason}{hint}") from None
    try:
        names = [name for name, _ in form.multi_items()]
        unknown = sorted(set(names) - set(accepted))
        if unknown:
            raise errors.InvalidParameter(f"unknown form field(s) {_brief(unknown)}: this endpoint accepts {list(accepted)} "
                                          f"(the clip goes in the field '{UPLOAD_FIELD}')")
        repeated = sorted({n for n in names if names.count(n) > 1} - set(repeatable))
        if repeated:
            raise errors.InvalidParameter(f"form field(s) {_brief(repeated)} sent more than once: send each once")
        if any(not isinstance(v, UploadFile) for v in form.getlist(UPLOAD_FIELD)):
            raise errors.InvalidParameter(f"the field '{UPLOAD_FIELD}' must be a file upload, a part with a filename "
                                          f"(curl -F '{UPLOAD_FIELD}=@clip.ogg'), got a text value (a part with only "
                                          "filename*, which RFC 7578 does not allow, is one too)")
        yield form
    finally:
        await form.close()


def _brief(names: list[str]) -> str:
    """Field names as an error shows them: the first five, each cut at 40 characters (a body's bytes can be names)."""
    shown = [name if len(name) <= 40 else name[:40] + "..." for name in names[:5]]
    return f"{shown}{' and more' if len(names) > 5 else ''}"


async def _check_complete(request, boundary: bytes) -> None:
    """A multipart body must end with its closing `boundary`: the parser takes a body cut short as a whole one
    (without its last fields, or with a clip cut short). Without a boundary at all the parser says so.
    A preamble before the first boundary (RFC 2046 5.1.1: text for readers that do not know multipart),
    which the parser refuses, is dropped."""
    body = await request.body()  # the guard's buffered body, kept for the parser
    close = b"--" + boundary + b"--"
    if not (body.startswith(close) or b"\r\n" + close in body):
        if b"\n" + close in body:
            raise errors.BadRequest("the multipart body's lines end in a bare LF: multipart/form-data needs CRLF (\\r\\n)")
        raise errors.BadRequest("the multipart body is cut short: it does not end with its closing boundary "
                                f"(--{boundary.decode('latin-1')[:70]}--)")
    delimiter = re.compile(rb"(?:^|\r\n)(--" + re.escape(boundary) + rb"[ \t]*(?:\r\n|--))")  # RFC 2046 5.1.1
    if not body.startswith(b"--" + boundary) and (first := delimiter.search(body)):
        request._body = body[first.start(1):]  # Starlette's buffered body, what request.form() parses


def _replay(body: bytes):
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


def _errors_as_json(scope, send):
    """Every error answer in our JSON format: hold each response of status >= 400 (error bodies are
    small) and answer what is not ours (BentoML's and Starlette's plain-text 404 and 405, any other
    foreign error as FrameworkError) as the matching error. Ours pass unchanged."""
    held = {}

    async def wrapped(message):
        if message["type"] == "http.response.start" and message["status"] >= 400:
            held.update(start=message, body=b"")
            return
        if "start" in held and message["type"] == "http.response.body":
            held["body"] += message.get("body", b"")
            if not message.get("more_body"):
                start, body = held.pop("start"), held.pop("body")
                error = _as_error(scope, start, body)
                if error is None:
                    await send(start)
                    await send({"type": "http.response.body", "body": body})
                else:
                    await _reply(send, error)
            return
        await send(message)

    return wrapped


def _as_error(scope, start, body: bytes) -> errors.SoundarcError | None:
    """The error a held response means (404, 405, else its text, or its status's phrase where it has none, its
    headers kept: a 416's Content-Range), or None for one of our own JSON errors."""
    status, headers = start["status"], dict(start.get("headers", []))
    where = f"{scope['method']} {scope['path']}"
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        payload = body.decode("utf-8", "replace").strip()
    if isinstance(payload, dict) and "message" in payload:
        return None  # ours (core.errors.to_dict)
    if status == 404:
        return errors.NotFound(f"no route {where}: see /docs for the API")
    if status == 405:
        allow = headers.get(b"allow", b"").decode("latin-1")
        return errors.MethodNotAllowed(f"{where} is not allowed; this route takes {allow or 'other methods'}", allow)
    message = str(payload.get("error", payload)) if isinstance(payload, dict) and payload else payload
    kept = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers.items() if k not in (b"content-type", b"content-length")}
    if status == 503:  # BentoML's /readyz while the model loads: every 503 says when to retry
        kept.setdefault("retry-after", "1")
    return errors.FrameworkError(message or f"{status} {_phrase(status)}: {where}", status, kept)


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"
