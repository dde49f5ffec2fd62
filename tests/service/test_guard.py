"""service.http.RequestGuard in process: a stalled body and a slow answer get our errors and free their slot."""

import asyncio
import json

from service.http import RequestGuard

HEADERS = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"100000")]


async def slow_app(scope, receive, send):
    await asyncio.sleep(5)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"late"})


def call(guard: RequestGuard, body_stalls: bool) -> tuple[int, dict]:
    """One POST /classify whose body sends a first chunk, then stalls (or ends); (status, JSON body)."""
    sent = []

    async def receive():
        if receive.calls:
            if body_stalls:
                await asyncio.Event().wait()  # the client sends nothing more
            return {"type": "http.request", "body": b"--x--", "more_body": False}
        receive.calls += 1
        return {"type": "http.request", "body": b"--x\r\n", "more_body": True}
    receive.calls = 0

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/classify", "headers": HEADERS}
    asyncio.run(guard(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))


def test_a_stalled_body_is_408_and_a_slow_answer_504_in_our_format():
    guard = RequestGuard(slow_app, 1_000_000, 1, {"/classify"}, lambda: None, timeout_s=1.0, body_idle_s=0.2)
    assert call(guard, body_stalls=True) == (408, {"error": "RequestTimeout",
                                                     "message": "the request body stalled: no bytes for 0.2 s"})
    status, body = call(guard, body_stalls=False)
    assert status == 504 and body["error"] == "ProcessingTimeout"
    assert guard.in_flight == 0  # both slots given back (max_in_flight 1: the second call was let in)
