"""The OpenAPI 3.0 document of the whole server, served at /openapi.json (and /docs.json) and read by
the API page at /docs: every route, its form fields with their ranges, what it answers and every
error it can give, as the server really answers them (tests/service/test_openapi.py runs
schemathesis over it against a real server).

BentoML's own spec knows only `@api` routes (the service has none: every route is in service.web); this
one is written here, and a test keeps its form fields equal to the fields the routes accept.
"""

from __future__ import annotations

import math

ERROR_STATUSES = {
    400: "the body or the audio cannot be used: malformed multipart, not audio, empty, damaged beyond use, "
         "an enrolment example without sound",
    404: "no such route, class, or (for /search) no vector index loaded",
    403: "a change of the enrolled classes sent by a browser from a page of another site (Sec-Fetch-Site, else Origin)",
    405: "the route exists, not with this method (`Allow` lists the ones it takes)",
    408: "the body stopped arriving (no bytes for SOUNDARC_BODY_IDLE_S seconds)",
    409: "clashes with what exists: a class of that name (whatever its case, spaces, _ or -), a built-in, the enrolment limit, "
         "a model directory exported again to another model since the server started, an enrolled-classes file damaged",
    413: "the upload or the audio is over the configured limit",
    415: "the body is not multipart/form-data, or is sent with a Content-Encoding",
    422: "a form field is unknown, repeated, of the wrong type or out of range",
    426: "a plain HTTP request to the WebSocket route: connect with ws://",
    503: "overloaded or starting (`Retry-After` says when to retry)",
    507: "the enrolled classes could not be saved (a read-only or full disk): nothing was changed",
    504: "no answer within the request timeout (SOUNDARC_REQUEST_TIMEOUT_S)",
}
UPLOAD_ERRORS = (400, 405, 408, 413, 415, 422, 503, 504)


def build(max_top_k: int, max_upload_mb: float, version: str) -> dict:
    """The document for a server with these limits."""
    audio = {"type": "string", "format": "binary",
             "description": f"the clip: WAV, FLAC, Ogg (Vorbis, Opus), MP3 or AIFF, at most {max_upload_mb:g} MB"}
    top_k = {"type": "integer", "minimum": 1, "maximum": max_top_k, "default": 5,
             "description": "how many classes to rank"}
    flag = {"type": "boolean"}
    paths = {
        "/classify": {"post": _upload(
            "Classify a clip", "The clip's answer: a class, `unknown` or `silence`, with its ranking.",
            {"audio": audio, "top_k": top_k,
             "windows": {**flag, "default": False, "description": "add a timeline of 1 s windows"},
             "open_set": {**flag, "default": True, "description": "false: never answer unknown"},
             "spectrogram": {**flag, "default": False, "description": "add a small log-mel image"},
             "events": {**flag, "default": False, "description": "add the sound events: label, start, end"},
             "threshold_rad": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": math.pi,
                               "description": "answer unknown beyond this angle (radians) to every class; lower "
                                              "turns away more unknown sounds and more known ones (default: the "
                                              "model's, open_set.threshold_rad in the answer; no effect with "
                                              "open_set=false, which answers no clip unknown)"}},
            "Classification")},
        "/embed": {"post": _upload(
            "Embed a clip", "The L2-normalised clip embedding (null, with label `silence`, when no window holds sound).",
            {"audio": audio, "windows": {**flag, "default": False, "description": "add each window's embedding"}},
            "Embedding", extra_errors=())},
        "/search": {"post": _upload(
            "Similar sounds", "The most similar items of the loaded vector index.",
            {"audio": audio, "top_k": top_k}, "SearchResult", extra_errors=(404,))},
        "/classes": {
            "get": _get("The model's classes and the enrolled ones", "Classes", errors=(422, 503)),
            "post": _upload(
                "Enrol a class", "A class of your own from 1-20 example clips (201).",
                {"label": {"type": "string", "minLength": 1, "maxLength": 64,
                           "pattern": "^[A-Za-z0-9][A-Za-z0-9 _.-]*$", "description": "the new class's name"},
                 "margin": {"type": "number", "minimum": -1, "maximum": 1,
                            "description": "how much closer (cosine) a window must be to this class than to the "
                                           "model's own answer for this class to win (and, for a model that gates "
                                           "by clips, a clip than to every built-in class, by the margin where "
                                           "positive); lower names it more often, "
                                           "at some cost to the built-in classes (default: the model's for the number of "
                                           "example clips, lower for fewer than 5)"},
                 "audio": {"type": "array", "items": audio, "minItems": 1, "maxItems": 20}},
                "Enrolled", status=201, extra_errors=(403, 409, 507), required=("label", "audio")),
        },
        "/classes/{label}": {"delete": {
            "summary": "Delete an enrolled class", "operationId": "delete_class", "tags": ["Custom classes"],
            "parameters": [{"name": "label", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json("deleted", "Deleted"), **_errors((403, 404, 405, 409, 422, 503, 507))}}},
        "/stream": {"get": {
            "summary": "Live audio over a WebSocket", "operationId": "stream", "tags": ["Audio"],
            "description": "Connect with ws://HOST:PORT/stream. First message (text JSON): {sample_rate, encoding "
                           "(pcm_s16le or f32le), channels, top_k, open_set, threshold_rad}; the server answers {type: ready, "
                           "window_s, hop_s}. Then binary PCM of any length; for every final window the server "
                           "sends {type: window, start_s, end_s, label, score, labels}, and {type: event, label, "
                           "start_s, end_s, score} once an event is over. The text {\"type\": \"end\"} ends the "
                           "stream: the server sends {type: summary}, the answer POST /classify gives for the same "
                           "audio, and closes with 1000. Close codes: 1008 a bad set-up, 1003 audio before it or a binary end "
                           "message, 1007 "
                           "a stream ending inside a sample or bad samples, 1009 a message over 16 MiB, 1013 too many "
                           "streams or the service starting, 1008 longer than the duration limit, 1001 idle, 1011 a "
                           "server error.",
            "responses": {"101": {"description": "switched to the WebSocket protocol"}, **_errors((426,))}}},
        "/stats": {"get": _get("Providers, model calls and windows scored since start by the worker that answers",
                               "Stats", errors=(422, 503))},
        "/readyz": {"get": _get("Ready: the model is loaded and warm", "Ready", errors=(503,))},
        "/livez": {"get": _plain("livez", "Alive")},
        "/healthz": {"get": _plain("healthz", "Alive (the older name of /livez)")},
        "/metrics": {"get": _plain("metrics", "Prometheus metrics")},
        "/ui": {"get": _html("ui", "The web page: record or upload a clip, see its answer, enrol a class")},
        "/docs": {"get": _html("docs", "This API, as a page that works offline")},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "tags": ["Documentation"],
                                  "responses": {"200": {"description": "OpenAPI 3.0",
                                                        "content": {"application/json": {"schema": {"type": "object"}}}},
                                                **_errors((405,))}}},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "soundarc", "version": version,
                     "description": "Sound event classification and embedding server. Every error the service "
                                    "answers is JSON `{\"error\": kind, \"message\": ...}` with the status below "
                                    "(a request the HTTP server itself cannot parse, malformed HTTP or a WebSocket "
                                    "handshake it refuses, gets its plain-text 400 or 403)."},
            "paths": paths, "components": {"schemas": SCHEMAS}}


def _upload(summary: str, description: str, fields: dict, answer: str, status: int = 200,
            extra_errors: tuple[int, ...] = (), required: tuple[str, ...] = ("audio",)) -> dict:
    """A POST of a multipart form: files in `audio`, every other field a text value."""
    def is_file(schema: dict) -> bool:
        return schema.get("format") == "binary" or schema.get("items", {}).get("format") == "binary"

    return {"summary": summary, "description": description, "operationId": summary.lower().replace(" ", "_"),
            "tags": ["Custom classes" if answer == "Enrolled" else "Audio"],
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": list(required), "properties": fields,
                           "additionalProperties": False},
                "encoding": {name: {"contentType": "text/plain"} for name, schema in fields.items() if not is_file(schema)}}}},
            "responses": {str(status): _json("the answer", answer),
                          **_errors(tuple(sorted(set(UPLOAD_ERRORS) | set(extra_errors))))}}


def _get(summary: str, answer: str, errors: tuple[int, ...] = ()) -> dict:
    return {"summary": summary, "operationId": answer.lower(), "tags": ["Service"],
            "responses": {"200": _json(summary, answer), **_errors((405, *errors))}}


def _plain(operation: str, summary: str) -> dict:
    return {"summary": summary, "operationId": operation,
            "tags": ["Infrastructure"], "responses": {"200": {"description": summary, "content": {"text/plain": {
                "schema": {"type": "string"}}}}}}


def _html(operation: str, summary: str) -> dict:
    return {"summary": summary, "operationId": operation, "tags": ["Documentation"],
            "responses": {"200": {"description": summary, "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_errors((405,))}}


def _json(description: str, schema: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _errors(statuses: tuple[int, ...]) -> dict:
    out = {}
    for status in statuses:
        out[str(status)] = _json(ERROR_STATUSES[status], "Error")
        if status == 503:
            out["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
        if status == 405:
            out["405"]["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "the methods it takes"}}
    return out


_number = {"type": "number"}
_nullable_number = {"type": "number", "nullable": True}
_model = {"type": "object", "required": ["id", "labels", "embedding_dim"],
          "properties": {"id": {"type": "string"}, "labels": {"type": "integer"}, "embedding_dim": {"type": "integer"},
                         "providers": {"type": "array", "items": {"type": "string"}, "nullable": True}}}
_activity = {"type": "object", "required": ["active_windows", "windows"],
             "properties": {"active_windows": {"type": "integer"}, "windows": {"type": "integer"}}}
_warnings = {"type": "array", "items": {"type": "string"},
             "description": "what was wrong with a file that decoded only in part"}
SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string", "description": "the kind, e.g. UndecodableAudio"},
                             "message": {"type": "string"}}},
    "Classification": {
        "type": "object", "required": ["label", "score", "ranking", "activity", "duration_s", "warnings", "model"],
        "properties": {
            "label": {"type": "string", "description": "a class, `unknown` or `silence`"},
            "score": {**_nullable_number, "description": "P(label) among the known classes; null for unknown/silence"},
            "ranking": {"type": "array", "items": {"type": "object", "required": ["label", "score"], "properties": {
                "label": {"type": "string"}, "score": _number}}},
            "activity": _activity,
            "open_set": {"type": "object", "properties": {
                "unknown": {"type": "boolean"}, "nearest_label": {"type": "string"}, "angle_rad": _number,
                "threshold_rad": _number}},
            "windows": {"type": "array", "items": {"type": "object", "properties": {
                "start_s": _number, "end_s": _number, "label": {"type": "string"}, "score": _nullable_number}}},
            "events": {"type": "array", "items": {"type": "object", "required": ["label", "start_s", "end_s", "score"],
                                                  "properties": {"label": {"type": "string"}, "start_s": _number,
                                                                 "end_s": _number, "score": _number}}},
            "spectrogram": {"type": "object", "properties": {
                "columns_per_s": _number, "n_mels": {"type": "integer"}, "dynamic_range_db": _number,
                "values": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}}},
            "duration_s": _number, "warnings": _warnings, "model": _model}},
    "Embedding": {
        "type": "object", "required": ["embedding", "dim", "activity", "duration_s", "warnings", "model"],
        "properties": {
            "embedding": {"type": "array", "items": _number, "nullable": True},
            "dim": {"type": "integer"}, "activity": _activity, "label": {"type": "string", "enum": ["silence"]},
            "windows": {"type": "array", "items": {"type": "object", "properties": {
                "start_s": _number, "active": {"type": "boolean"}, "embedding": {"type": "array", "items": _number}}}},
            "duration_s": _number, "warnings": _warnings, "model": _model}},
    "SearchResult": {
        "type": "object", "required": ["results", "duration_s", "warnings", "model", "index"],
        "properties": {"results": {"type": "array", "items": {"type": "object"}},
                       "label": {"type": "string", "enum": ["silence"]}, "duration_s": _number, "warnings": _warnings,
                       "model": _model, "index": {"type": "object"}}},
    "Classes": {
        "type": "object", "required": ["classes", "enrolment"],
        "properties": {"enrolment": {"type": "boolean"},
                       "enrol_gate": {"type": "string", "enum": ["window", "clip"],
                                      "description": "where enrolled classes are answered: in the windows they win, "
                                                     "or also for a clip nearer their prototype (the model's)"},
                       "classes": {"type": "array", "items": {
            "type": "object", "required": ["label", "kind"], "properties": {
                "label": {"type": "string"}, "kind": {"type": "string", "enum": ["built-in", "enrolled"]},
                "examples": {"type": "integer"}, "enrolled_at": {"type": "string"}, "margin": _number,
                "threshold_rad": _number}}}}},
    "Enrolled": {"type": "object", "required": ["label", "kind", "classes", "warnings"],
                 "properties": {"label": {"type": "string"}, "kind": {"type": "string"}, "examples": {"type": "integer"},
                                "enrolled_at": {"type": "string"}, "margin": _number, "threshold_rad": _number,
                                "classes": {"type": "integer"}, "warnings": _warnings}},
    "Deleted": {"type": "object", "required": ["deleted", "classes"],
                "properties": {"deleted": {"type": "string"}, "classes": {"type": "integer"}}},
    "Stats": {"type": "object", "required": ["model_id", "providers", "model_calls", "patches_scored"],
              "properties": {"model_id": {"type": "string"}, "providers": {"type": "array", "items": {"type": "string"}},
                             "worker_pid": {"type": "integer"}, "workers": {"type": "integer"},
                             "model_calls": {"type": "integer"}, "patches_scored": {"type": "integer"}}},
    "Ready": {"type": "object", "required": ["status"],
              "properties": {"status": {"type": "string"}, "model_id": {"type": "string"},
                             "providers": {"type": "array", "items": {"type": "string"}}}},
}
