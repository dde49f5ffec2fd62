"""Routes beside the BentoML APIs, mounted on the same server: custom classes and the web page.

    GET    /stats            the providers, model calls and windows scored since start
    GET    /classes          the model's classes and the enrolled ones
    POST   /classes          multipart: `label` + 1-20 files in `audio` -> enrols a class (201)
    DELETE /classes/{label}  removes an enrolled class
    GET    /ui               the web page (plain HTML/JS/CSS in service/ui/, nothing to build)
    GET    /docs             the API page (service/ui/docs.html, renders /openapi.json; works offline)
    GET    /openapi.json     the OpenAPI document of every route (service.openapi)
    WS     /stream           live audio in, window answers, events and the clip's answer out (service.stream)

Errors are the service's JSON errors with their status.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.responses import FileResponse, JSONResponse, RedirectResponse
from starlette.routing import Route, WebSocketRoute

from core import errors
from service.http import UPLOAD_FIELD, error_response
from service.stream import serve_stream

UI_DIR = Path(__file__).parent / "ui"
UI_FILES = {"index.html", "app.js", "style.css", "docs.html", "docs.js"}


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

    @with_service
    async def stats(service, request):
        return JSONResponse(service.stats())

    @with_service
    async def classes(service, request):
        if request.method == "GET":
            return JSONResponse(service.list_classes())
        return await enrol(service, request)

    async def enrol(service, request):
        form = await request.form()  # the request guard has checked size and syntax
        try:
            label = form.get("label")
            if not isinstance(label, str):
                raise errors.InvalidParameter("the form needs a text field 'label' naming the class")
            uploads = form.getlist(UPLOAD_FIELD)
            if any(not isinstance(u, UploadFile) for u in uploads):
                raise errors.InvalidParameter(f"every '{UPLOAD_FIELD}' field must be a file upload")
            clips = [(u.filename or f"clip {i + 1}", await u.read()) for i, u in enumerate(uploads)]
        finally:
            await form.close()
        return JSONResponse(await service.enrol(label, clips), status_code=201)

    @with_service
    async def remove(service, request):
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


def _ui_file(name: str) -> FileResponse:
    """A file of service/ui/, never cached (the page changes with the server)."""
    return FileResponse(UI_DIR / name, headers={"Cache-Control": "no-cache"})
