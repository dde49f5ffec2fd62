"""The routes of service.web against a stand-in service: errors as JSON, the start-up window, files."""

import asyncio

import httpx

from core import errors
from service.web import build_app


def call(service, method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the routes, in process (httpx's ASGI transport)."""
    async def go():
        transport = httpx.ASGITransport(app=build_app(lambda: service, {}))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


class StandIn:
    def list_classes(self):
        return {"classes": [{"label": "dog", "kind": "built-in"}], "enrolment": False}

    async def enrol(self, label, clips, margin=None, abandoned=lambda: False):
        raise errors.Conflict(f"cannot enrol {label!r} from {len(clips)} clips")

    async def remove_class(self, label):
        raise errors.NotFound(f"no enrolled class named {label!r}")


def test_routes_answer_json_errors_with_their_status():
    service = StandIn()
    assert call(service, "GET", "/classes").json()["enrolment"] is False
    two = [("audio", ("a.wav", b"x")), ("audio", ("b.wav", b"y"))]
    made = call(service, "POST", "/classes", data={"label": "bark"}, files=two)
    assert made.status_code == 409 and made.json() == {"error": "Conflict", "message": "cannot enrol 'bark' from 2 clips"}
    assert call(service, "POST", "/classes", files=two).status_code == 422  # no label
    gone = call(service, "DELETE", "/classes/a%20b")
    assert gone.status_code == 404 and "'a b'" in gone.json()["message"]


def test_before_the_service_exists_it_is_503_with_retry_after():
    response = call(None, "GET", "/classes")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"


def test_only_the_page_files_are_served():
    assert call(None, "GET", "/ui").status_code == 200 and call(None, "GET", "/ui/style.css").status_code == 200
    assert call(None, "GET", "/ui/web.py").status_code == 404
    assert call(None, "GET", "/ui/%2e%2e%2fweb.py").status_code == 404
