"""Every route of the server, one Starlette app mounted on the BentoML service (the one routing layer).

    POST   /classify         multipart: `audio` + the fields of FORMS -> the clip's answer
    POST   /embed            multipart: `audio` (+ windows) -> the clip's embedding
    POST   /search           multipart: `audio` (+ top_k) -> similar items of the vector index
    GET    /stats            the providers, model calls and windows scored since start by this worker
    GET    /classes          the model's classes and the enrolled ones
    POST   /classes          multipart: `label` + 1-20 files in `audio` -> enrols a class (201)
    DELETE /classes/{label}  removes an enrolled class
    GET    /ui               the web page (plain HTML/JS/CSS in service/ui/, nothing to build)
    GET    /docs             the API page (service/ui/docs.html, renders /openapi.json; works offline)
    GET    /openapi.json     the OpenAPI document of every route (service.openapi)
    WS     /stream           live audio in, window answers, events and the clip's answer out (service.stream)

BentoML adds /readyz, /livez, /healthz and /metrics. Errors are the service's JSON errors with
their status (service.http.error_response).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Route, WebSocketRoute

from core import errors
from service.http import ABANDONED, UPLOAD_FIELD, error_response, form_of
from service.stream import serve_stream

UI_DIR = Path(__file__).parent / "ui"
UI_FILES = {"index.html", "app.js", "style.css", "docs.html", "docs.js"}
# POST routes that score one clip -> their form fields beside `audio`, with defaults (which give the types;
# None: an optional number)
FORMS = {
    "/classify": {"top_k": 5, "windows": False, "open_set": True, "spectrogram": False, "events": False,
                  "threshold_rad": None},
    "/embed": {"windows": False},
    "/search": {"top_k": 5},
}
ENROL_FIELDS = ("label", "margin", UPLOAD_FIELD)
UPLOAD_PATHS = {*FORMS, "/classes"}  # the POST routes that take a form upload (service.http.RequestGuard)
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
INTEGER = re.compile(r"[+-]?[0-9]+")
NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def build_app(get_service, spec: dict, settings=None) -> Starlette:
    """`get_service()` -> the SoundArc instance of this process, or None before it exists; `spec`
    the OpenAPI document (service.openapi); `settings` (service.settings) bound the streams."""
    streams: list = []  # the /stream sessions open now

    def with_service(handler):
        @functools.wraps(handler)
        async def route(request):
            service = get_service()
            try:
                if service is None:
                    raise errors.Overloaded("the service is starting, retry shortly")
                return await handler(service, request)
            except errors.SoundarcError as e:
                return error_response(e)

        return route

    def scorer(path: str):
        """/classify, /embed, /search: the form parsed once, then the service's method of that name."""
        name, fields = path.strip("/"), FORMS[path]

        @with_service
        async def score(service, request):
            async with form_of(request, (UPLOAD_FIELD, *fields)) as form:
                upload = form.get(UPLOAD_FIELD)
                if upload is None:
                    raise errors.InvalidParameter(f"the form needs the clip as a file in the field '{UPLOAD_FIELD}'")
                params = {field: _parse_field(field, form.get(field), default) for field, default in fields.items()}
                audio = await upload.read()
            return JSONResponse(await getattr(service, name)(audio, **params))

        return score

    @with_service
    async def stats(service, request):
        _refuse_options(request, "GET /stats")
        return JSONResponse(service.stats())

    @with_service
    async def classes(service, request):
        if request.method != "POST":  # GET, and HEAD (Starlette's, for GET): a list, never a change
            _refuse_options(request, "GET /classes")
            return JSONResponse(service.list_classes())
        return await enrol(service, request)

    async def enrol(service, request):
        _refuse_other_sites(request)
        async with form_of(request, ENROL_FIELDS, repeatable=(UPLOAD_FIELD,)) as form:
            label = form.get("label")
            if not isinstance(label, str):
                raise errors.InvalidParameter("the form needs a text field 'label' naming the class")
            margin = _parse_field("margin", form.get("margin"), None)  # its range: SoundArc.enrol
            uploads = form.getlist(UPLOAD_FIELD)  # files only (form_of)
            clips = [(u.filename or f"clip {i + 1}", await u.read()) for i, u in enumerate(uploads)]
        abandoned = request.scope.get(ABANDONED, lambda: False)  # service.http.RequestGuard's
        return JSONResponse(await service.enrol(label, clips, margin, abandoned), status_code=201)

    @with_service
    async def remove(service, request):
        _refuse_other_sites(request)
        _refuse_options(request, "DELETE /classes/LABEL")
        return JSONResponse(await service.remove_class(request.path_params["label"]))

    async def stream_over_http(request):
        return error_response(errors.UpgradeRequired(
            "/stream is a WebSocket: connect with ws://HOST:PORT/stream (see /docs, or `soundarc stream`)"))

    async def docs(request):
        return _ui_file("docs.html")

    async def page(request):
        name = request.path_params.get("name", "index.html")
        if name not in UI_FILES:
            return error_response(errors.NotFound(f"no such file /ui/{name}"))
        return _ui_file(name)

    return Starlette(routes=[
        *(Route(path, scorer(path), methods=["POST"]) for path in FORMS),
        Route("/stats", stats, methods=["GET"]),
        WebSocketRoute("/stream", lambda websocket: serve_stream(websocket, get_service(), settings, streams)),
        Route("/stream", stream_over_http, methods=["GET"]),
        Route("/classes", classes, methods=["GET", "POST"]),
        Route("/classes/{label:path}", remove, methods=["DELETE"]),
        Route("/ui", page, methods=["GET"]),
        Route("/ui/", lambda request: RedirectResponse("/ui"), methods=["GET"]),
        Route("/ui/{name}", page, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/openapi.json", lambda request: JSONResponse(spec), methods=["GET"]),
    ])


def _form_text(name: str, raw) -> str | None:
    """A form field's text, stripped; None when absent or blank (a form's empty box)."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise errors.InvalidParameter(f"'{name}' must be a text value, not a file")
    return raw.strip() or None


def _refuse_other_sites(request) -> None:
    """403 for a change of the enrolled classes that a page of another site makes a browser send: a multipart
    POST needs no CORS preflight, so any page open in the browser of someone who runs the server could enrol
    classes on it. Browsers name where a request comes from in Sec-Fetch-Site (to https and localhost only),
    and in Origin on every cross-origin POST or DELETE; other clients send neither."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise errors.Forbidden(f"a page of another site ({site}) may not change the enrolled classes: use this "
                               "server's own page (/ui), or a client that is not a browser")
    origin = request.headers.get("origin")
    if site is None and origin is not None:  # "null": a sandboxed frame, a file: never this server's page
        hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")} - {None}
        if urlsplit(origin).netloc not in hosts:
            raise errors.Forbidden(f"a page of another origin ({origin[:80]}) may not change the enrolled classes: use "
                                   "this server's own page (/ui); behind a proxy, have it pass the Host header")


def _refuse_options(request, route: str) -> None:
    """422 for a route that takes no options but was given some in its URL (else ignored without a word)."""
    if request.query_params:
        raise errors.InvalidParameter(f"{route} takes no options, got ?{request.url.query[:80]}")


def _parse_field(name: str, raw, default):
    """A form value as the type of its default (bool or int; None: an optional number); absent or
    blank: the default. Ranges are the service's to check, before any clip is decoded."""
    text = _form_text(name, raw)
    if text is None:
        return default
    if isinstance(default, bool):
        if text.lower() in TRUE + FALSE:
            return text.lower() in TRUE
        raise errors.InvalidParameter(f"'{name}' must be true or false, got {raw[:40]!r}")
    kind, pattern, parse = ("a number", NUMBER, float) if default is None else ("an integer", INTEGER, int)
    try:
        if pattern.fullmatch(text):  # Python's int and float also take "1_0" and digits of other scripts
            return parse(text)
    except ValueError:  # an integer of over 4300 digits
        raise errors.InvalidParameter(f"'{name}' is an integer of {len(text)} digits: out of its range") from None
    raise errors.InvalidParameter(f"'{name}' must be {kind}, got {raw[:40]!r}")


def _ui_file(name: str) -> FileResponse:
    """A file of service/ui/, never cached (the page changes with the server)."""
    return FileResponse(UI_DIR / name, headers={"Cache-Control": "no-cache"})
