"""service.http.RequestGuard in process: stalled and trickling bodies, slow answers, answers under way."""

import asyncio
import json

import pytest

from service.http import ABANDONED, RequestGuard

HEADERS = [(b"content-type", b"multipart/form-data; boundary=x"), (b"content-length", b"100000")]


def app_that(sleeps_s: float = 0.0, starts_first: bool = False, raises: Exception | None = None):
    """An upload route that answers "done" after `sleeps_s` (its answer begun first, or not), or raises."""
    async def app(scope, receive, send):
        if starts_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(sleeps_s)
        if raises is not None:
            raise raises
        if not starts_first:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"done": true}'})
    return app


def call(guard: RequestGuard, body: str = "whole", after_s: float = 0.0) -> tuple[int, dict]:
    """One POST /classify whose body comes whole, stalls after a first chunk, or trickles a byte every
    0.05 s; (status, JSON body) of the answer, and the guard's uploads in flight `after_s` later."""
    sent = []

    async def receive():
        receive.calls += 1
        if body == "stalls" and receive.calls > 1:
            await asyncio.Event().wait()  # the client sends nothing more
        if body == "trickles":
            await asyncio.sleep(0.05)
            return {"type": "http.request", "body": b"x", "more_body": True}
        return {"type": "http.request", "body": b"--x--", "more_body": receive.calls == 1}
    receive.calls = 0

    async def send(message):
        sent.append(message)

    async def go():
        await guard({"type": "http", "method": "POST", "path": "/classify", "headers": HEADERS}, receive, send)
        answered_in_flight = guard.in_flight
        await asyncio.sleep(after_s)
        return answered_in_flight, guard.in_flight

    in_flight = asyncio.run(go())
    start = next(m for m in sent if m["type"] == "http.response.start")
    call.headers = dict(start["headers"])
    return start["status"], json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")), in_flight


def guard_of(app, timeout_s: float = 1.0) -> RequestGuard:
    return RequestGuard(app, 1_000_000, 1, {"/classify"}, lambda: None, timeout_s=timeout_s, body_idle_s=0.2)


def test_a_body_that_stalls_or_trickles_is_408_and_gives_its_slot_back():
    status, body, in_flight = call(guard_of(app_that()), body="stalls")
    assert (status, body["message"], in_flight) == (408, "the request body stalled: no bytes for 0.2 s", (0, 0))
    assert call.headers[b"connection"] == b"close"  # the rest of the body will not be read
    status, body, in_flight = call(guard_of(app_that()), body="trickles")  # never idle, never whole
    assert (status, body["error"], in_flight) == (408, "RequestTimeout", (0, 0)) and "did not arrive" in body["message"]


def test_a_slow_answer_is_504_in_our_format_and_holds_its_slot_until_its_work_ends():
    status, body, in_flight = call(guard_of(app_that(sleeps_s=1.0)), after_s=1.0)
    assert (status, body["error"]) == (504, "ProcessingTimeout")
    assert in_flight == (1, 0)  # taken when the 504 went out (the work goes on), free once it ended


def test_an_answer_under_way_is_not_cut_and_the_routes_own_errors_are_not_504():
    assert call(guard_of(app_that(sleeps_s=1.0, starts_first=True)))[:2] == (200, {"done": True})
    assert call(guard_of(app_that()))[:2] == (200, {"done": True})
    with pytest.raises(TimeoutError):  # the route's own error reaches the server as it was
        call(guard_of(app_that(raises=TimeoutError("the route's"))))


def test_a_client_gone_while_its_body_arrives_gives_its_slot_back():
    guard = guard_of(app_that())

    async def go():
        async def receive():
            await asyncio.Event().wait()  # the body never comes
        async def send(message):
            pass
        request = asyncio.ensure_future(guard({"type": "http", "method": "POST", "path": "/classify",
                                               "headers": HEADERS}, receive, send))
        await asyncio.sleep(0.05)
        request.cancel()  # as the server does when the client disconnects
        await asyncio.wait({request})
        await asyncio.sleep(0.01)
        return guard.in_flight

    assert asyncio.run(go()) == 0


def test_a_client_gone_half_way_through_its_body_runs_nothing():
    """A disconnect before the body's end is not the body's end: the route never runs on half a form."""
    ran = []

    async def app(scope, receive, send):
        ran.append(scope)

    guard = guard_of(app)

    async def go():
        messages = iter([{"type": "http.request", "body": b"--x\r\n", "more_body": True}, {"type": "http.disconnect"}])

        async def receive():
            return next(messages)

        sent = []

        async def send(message):
            sent.append(message)
        await guard({"type": "http", "method": "POST", "path": "/classify", "headers": HEADERS}, receive, send)
        await asyncio.sleep(0.01)
        return sent, guard.in_flight

    assert asyncio.run(go()) == ([], 0) and ran == []


def test_an_upload_answered_504_knows_it_was_abandoned():
    """The route can see that its answer was dropped (an enrolment then saves nothing: SoundArc.enrol)."""
    scopes = []

    async def app(scope, receive, send):
        scopes.append(scope)
        await asyncio.sleep(1.0)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    status, _, _ = call(guard_of(app), after_s=1.0)
    assert status == 504 and scopes[0][ABANDONED]() is True
    assert call(guard_of(app_that()))[0] == 200


def test_a_client_gone_while_its_upload_runs_abandons_it():
    """The body arrived whole, then the client left while the route worked: the route can see it (uvicorn does
    not cancel it), so an enrolment saves nothing."""
    seen = []

    async def app(scope, receive, send):
        await asyncio.sleep(0.1)  # the work; the client leaves meanwhile
        seen.append(scope[ABANDONED]())
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def go():
        gone = asyncio.Event()
        messages = [{"type": "http.request", "body": b"--x--", "more_body": False}]

        async def receive():
            if messages:
                return messages.pop(0)
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            pass
        request = asyncio.ensure_future(guard_of(app)({"type": "http", "method": "POST", "path": "/classify",
                                                      "headers": HEADERS}, receive, send))
        await asyncio.sleep(0.02)
        gone.set()
        await request

    asyncio.run(go())
    assert seen == [True]
