"""Malformed requests against a real server: every answer is a JSON 4xx, never a 5xx, a hang or a
crash, and the server still answers a good clip afterwards. Bounded and seeded."""

import random

import pytest
import requests

POST_ROUTES = ("/classify", "/embed", "/search", "/classes")
FIELDS = [b"audio", b"file", b"top_k", b"windows", b"open_set", b"label", b"", b"\xff\xfe", b"a\"b", b"audio\x00"]
VALUES = [b"", b"3", b"-1", b"abc", b"true", b"\xff", b"x" * 300, b"OggS\x00\x02", b"RIFF\x24\x00\x00\x00WAVEfmt "]
CONTENT_TYPES = ["multipart/form-data; boundary={b}", "multipart/form-data", "multipart/form-data; boundary=",
                 "multipart/form-data; boundary={b}; charset=bogus", "multipart/mixed; boundary={b}",
                 "application/x-www-form-urlencoded", "application/json", "text/plain", ""]


def random_part(rng: random.Random, boundary: bytes, clip: bytes) -> bytes:
    name = rng.choice(FIELDS)
    data = clip[: rng.randrange(len(clip))] if rng.random() < 0.3 else rng.choice(VALUES)
    disposition = b"form-data; name=\"" + name + b"\""
    if rng.random() < 0.6:
        disposition += b"; filename=\"" + rng.choice([b"a.ogg", b"", b"\xff.wav", b"../../x"]) + b"\""
    headers = [b"Content-Disposition: " + disposition] if rng.random() < 0.9 else []
    if rng.random() < 0.3:
        headers.append(b"Content-Type: " + rng.choice([b"audio/ogg", b"", b"\xff/\xfe", b"text/plain"]))
    newline = b"\r\n" if rng.random() < 0.9 else b"\n"
    return b"--" + boundary + newline + newline.join(headers) + newline + newline + data + newline


def random_request(rng: random.Random, clip: bytes) -> tuple[bytes, str]:
    boundary = rng.choice([b"xyz", b"----soundarc", b"a" * 70])
    body = b"".join(random_part(rng, boundary, clip) for _ in range(rng.randrange(0, 4)))
    body += rng.choice([b"--" + boundary + b"--\r\n", b"", b"--" + boundary, b"garbage"])
    if rng.random() < 0.1:
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    return body, rng.choice(CONTENT_TYPES).format(b=boundary.decode())


def test_random_malformed_requests_are_4xx_json(server, fixtures):
    rng = random.Random(20261128)
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()[:20_000]
    failures = []
    for i in range(160):
        route = POST_ROUTES[i % len(POST_ROUTES)]
        body, content_type = random_request(rng, clip)
        headers = {"Content-Type": content_type} if content_type else {}
        r = requests.post(server + route, data=body, headers=headers, timeout=30)
        if r.status_code >= 500 or r.headers.get("content-type") != "application/json" or "message" not in r.json():
            failures.append((route, content_type, body[:200], r.status_code, r.text[:200]))
    assert not failures, failures[:5]
    good = requests.post(f"{server}/classify", files={"audio": ("a.ogg", (fixtures / "1-27724-A-1.ogg").read_bytes())},
                         timeout=60)
    assert good.status_code == 200 and good.json()["label"]


@pytest.mark.parametrize("method,path,status,allow", [
    ("GET", "/classify", 405, {"POST"}), ("PUT", "/embed", 405, {"POST"}), ("POST", "/stats", 405, {"GET", "HEAD"}),
    ("PUT", "/classes", 405, {"GET", "HEAD", "POST"}), ("GET", "/classes/dog", 405, {"DELETE"}), ("GET", "/nothing", 404, None),
])
def test_wrong_methods_and_routes_are_json(server, method, path, status, allow):
    r = requests.request(method, server + path, timeout=10)
    assert r.status_code == status and r.headers["content-type"] == "application/json", r.text
    assert r.json()["error"] in ("MethodNotAllowed", "NotFound") and path in r.json()["message"]
    if allow:
        assert set(r.headers["allow"].split(", ")) == allow


def test_stats_is_a_get(server):
    stats = requests.get(f"{server}/stats", timeout=10).json()
    assert {"model_id", "providers", "model_calls", "patches_scored"} <= set(stats)
