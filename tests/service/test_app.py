"""The HTTP service through real clients: results, formats, errors, batching, overload, metrics."""

import io
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf
import soxr

from tests.helpers import LABELS
from tests.service.conftest import SERVER_SETTINGS, start_server, stop_server, stream


def post(url, endpoint, data: bytes | None = None, filename="clip.ogg", fields=None, **kw):
    files = {"audio": (filename, data, "application/octet-stream")} if data is not None else None
    return requests.post(f"{url}/{endpoint}", files=files, data=fields or {}, timeout=60, **kw)


def encoded(fixtures, fmt: str, subtype: str, rate: int = 22_050, seconds: float | None = None) -> bytes:
    """The rooster fixture re-encoded (resampled to `rate`, looped or cut to `seconds`)."""
    y, sr = sf.read(fixtures / "1-27724-A-1.ogg", dtype="float32")
    y = soxr.resample(y, sr, rate)
    if seconds is not None:
        y = np.resize(y, int(seconds * rate))
    buf = io.BytesIO()
    sf.write(buf, y, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def test_readyz_names_model_and_providers(server, test_artifact):
    body = requests.get(f"{server}/readyz", timeout=10).json()
    assert body["status"] == "ready" and body["providers"] == ["CPUExecutionProvider"]
    assert body["model_id"].startswith("run-")
    for probe in ("healthz", "livez"):
        assert requests.get(f"{server}/{probe}", timeout=10).status_code == 200


def test_classify(server, fixtures):
    r = post(server, "classify", (fixtures / "1-27724-A-1.ogg").read_bytes(), fields={"top_k": "2", "windows": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["label"] in LABELS for x in body["ranking"]] == [True, True]
    assert body["label"] == "unknown" or (body["label"], body["score"]) == tuple(body["ranking"][0].values())
    assert body["ranking"][0]["score"] >= body["ranking"][1]["score"]
    assert body["duration_s"] == pytest.approx(5.0, abs=0.01)
    assert len(body["windows"]) == 10 and body["windows"][0]["start_s"] == 0.0  # 502 frames: 0, 50, .., 400, 401
    assert body["activity"] == {"active_windows": 5, "windows": 10}  # the rooster's silent tail does not vote
    assert [w["label"] for w in body["windows"][5:]] == ["silence"] * 5
    assert body["model"]["id"] and body["model"]["labels"] == 3


def test_blank_form_fields_mean_the_defaults(server, fixtures):
    rooster = (fixtures / "1-27724-A-1.ogg").read_bytes()
    blank = post(server, "classify", rooster, fields={"top_k": " ", "windows": "", "open_set": ""}).json()
    assert blank == post(server, "classify", rooster).json()  # an HTML form sends a blank box as ""


def test_open_set_unknown_and_its_switch(server, fixtures):
    rooster = (fixtures / "1-27724-A-1.ogg").read_bytes()  # the test model's "siren" prototype
    body = post(server, "classify", rooster).json()
    assert not body["open_set"]["unknown"] and body["open_set"]["nearest_label"] == "siren"
    assert (body["label"], body["score"]) == tuple(body["ranking"][0].values())  # known: the (random) head's top class
    tone = io.BytesIO()
    sf.write(tone, 0.5 * np.sin(2 * np.pi * 440 * np.arange(44_100) / 22_050).astype(np.float32), 22_050, format="WAV")
    far = post(server, "classify", tone.getvalue(), fields={"top_k": "4"}).json()
    assert far["label"] == "unknown" and far["score"] is None and far["open_set"]["unknown"]
    assert far["open_set"]["angle_rad"] > far["open_set"]["threshold_rad"]
    assert sum(s["score"] for s in far["ranking"]) == pytest.approx(1.0, abs=1e-4)  # the closed set, named as such
    closed = post(server, "classify", tone.getvalue(), fields={"open_set": "false"}).json()
    assert closed["label"] == closed["ranking"][0]["label"] and "open_set" not in closed
    for offset, unknown in ((0.01, False), (-0.01, True)):  # the request's own "unknown" angle
        threshold = round(far["open_set"]["angle_rad"] + offset, 6)
        mine = post(server, "classify", tone.getvalue(), fields={"threshold_rad": str(threshold)}).json()
        assert mine["open_set"] == {**far["open_set"], "unknown": unknown, "threshold_rad": threshold}
        assert mine["label"] == ("unknown" if unknown else mine["ranking"][0]["label"])


@pytest.mark.parametrize("endpoint", ["classify", "embed", "search"])
def test_silence_is_an_answer(server, endpoint):
    buf = io.BytesIO()
    sf.write(buf, np.zeros(5 * 16_000, np.float32), 16_000, format="WAV")
    r = post(server, endpoint, buf.getvalue())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["label"] == "silence"
    if endpoint == "classify":
        assert body["score"] is None and body["ranking"] == [] and body["activity"]["active_windows"] == 0
    if endpoint == "embed":
        assert body["embedding"] is None and body["dim"] == 128
    if endpoint == "search":
        assert body["results"] == []


def test_embed_is_normalised_and_bit_identical(server, fixtures):
    data = (fixtures / "1-17367-A-10.ogg").read_bytes()
    a, b = post(server, "embed", data).json(), post(server, "embed", data, fields={"windows": "true"}).json()
    assert a["dim"] == 128 and len(a["embedding"]) == 128
    assert np.linalg.norm(a["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert a["embedding"] == b["embedding"] and len(b["windows"]) == 10


@pytest.mark.parametrize("fmt,subtype,name", [
    ("WAV", "PCM_16", "a.wav"), ("WAV", "FLOAT", "a.wav"), ("FLAC", "PCM_24", "a.flac"),
    ("OGG", "OPUS", "a.opus"), ("MP3", "MPEG_LAYER_III", "a.mp3"), ("AIFF", "PCM_16", "a.aiff"),
])
def test_formats(server, fixtures, fmt, subtype, name):
    data = encoded(fixtures, fmt, subtype, rate=48_000 if subtype == "OPUS" else 22_050)
    r = post(server, "classify", data, filename=name)
    assert r.status_code == 200, r.text


def test_short_clip(server):
    buf = io.BytesIO()
    sf.write(buf, np.random.default_rng(0).standard_normal(50).astype(np.float32) * 0.1, 8000, format="WAV")
    r = post(server, "classify", buf.getvalue(), fields={"windows": "true"})
    assert r.status_code == 200 and len(r.json()["windows"]) == 1
    assert r.json()["label"] == "silence"  # 6 ms: less than the 50 ms of sound a window needs
    assert r.json()["windows"][0]["end_s"] == r.json()["duration_s"]  # the window is tiled, its span is the clip's
    buf = io.BytesIO()
    sf.write(buf, np.array([0.9, -0.9], np.float32), 192_000, format="WAV")  # none at the model's rate
    r = post(server, "classify", buf.getvalue())
    assert r.status_code == 200 and r.json()["label"] == "silence", r.text


def test_a_file_cut_short_is_answered_with_a_warning(server, fixtures):
    whole = encoded(fixtures, "WAV", "PCM_24", rate=44_100)
    for endpoint in ("classify", "embed"):
        assert post(server, endpoint, whole).json()["warnings"] == []
        r = post(server, endpoint, whole[:30_000])  # the 24-bit WAV cut to 30 kB
        assert r.status_code == 200, r.text
        assert r.json()["duration_s"] < 0.3 and "cut short" in r.json()["warnings"][0], r.json()["warnings"]


def bad_requests(fixtures):
    good = (fixtures / "1-27724-A-1.ogg").read_bytes()
    return {
        "empty": (dict(data=b""), 400),
        "text": (dict(data=b"just some text\n" * 10, filename="x.wav"), 400),
        "random": (dict(data=np.random.default_rng(0).bytes(5000), filename="x.mp3"), 400),
        "truncated": (dict(data=good[:400]), 400),
        "no_file": (dict(data=None, fields={"top_k": "3"}), 422),
        "text_field": (dict(data=None, fields={"audio": "http://127.0.0.1/x.wav"}), 422),
        "top_k_zero": (dict(data=good, fields={"top_k": "0"}), 422),
        "top_k_text": (dict(data=good, fields={"top_k": "many"}), 422),
        "windows_bad": (dict(data=good, fields={"windows": "perhaps"}), 422),
        "threshold_zero": (dict(data=good, fields={"threshold_rad": "0"}), 422),
        "threshold_text": (dict(data=good, fields={"threshold_rad": "wide"}), 422),
        "top_k_underscore": (dict(data=good, fields={"top_k": "1_0"}), 422),  # Python's int() takes these two
        "top_k_other_digits": (dict(data=good, fields={"top_k": "\u0663"}), 422),
        "top_k_huge": (dict(data=good, fields={"top_k": "9" * 5000}), 422),  # past int()'s 4300 digits
        "too_big": (dict(data=b"\0" * (1024 * 1024 + 100_000)), 413),
    }


@pytest.mark.parametrize("case", ["empty", "text", "random", "truncated", "no_file", "text_field", "top_k_zero",
                                  "top_k_text", "windows_bad", "threshold_zero", "threshold_text", "top_k_underscore",
                                  "top_k_other_digits", "top_k_huge", "too_big"])
def test_bad_requests_get_documented_4xx(server, fixtures, case):
    kwargs, status = bad_requests(fixtures)[case]
    r = post(server, "classify", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["message"]
    if case == "top_k_huge":  # not "not an integer"
        assert "an integer of 5000 digits" in r.json()["message"]


def test_too_long_audio_is_413(server, fixtures):
    r = post(server, "classify", encoded(fixtures, "OGG", "VORBIS", seconds=30))
    assert r.status_code == 413 and "longer than" in r.json()["message"]


@pytest.mark.parametrize("headers,body,status", [
    ({"Content-Type": "audio/ogg"}, b"OggS", 415),
    ({"Content-Type": "application/json"}, b'{"audio": "http://example.com/a.wav"}', 415),
    ({"Content-Type": "multipart/form-data"}, b"garbage", 400),
    ({"Content-Type": "multipart/form-data; boundary=xyz"}, b"garbage", 400),
])
def test_raw_bodies(server, headers, body, status):
    r = requests.post(f"{server}/classify", data=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text


def test_two_content_types_are_400_not_a_guess(server, fixtures):
    """The guard and the route would read different ones (text/plain, then the form's)."""
    form = requests.Request("POST", f"{server}/classify", files={"audio": ("a.ogg", b"OggS")}).prepare()
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=30) as s:
        s.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                  b"Content-Type: " + form.headers["Content-Type"].encode() + b"\r\n"
                  b"Content-Length: " + str(len(form.body)).encode() + b"\r\nConnection: close\r\n\r\n" + form.body)
        answer = b"".join(iter(lambda: s.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400") and b"more than one Content-Type header" in answer, answer[:300]


def test_search_finds_the_same_clip_first(server, fixtures):
    r = post(server, "search", (fixtures / "1-27724-A-1.ogg").read_bytes(), fields={"top_k": "3"})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3 and results[0]["id"].endswith("1-27724-A-1.ogg")
    assert results[0]["similarity"] == pytest.approx(1.0, abs=1e-4)


def test_events_are_the_same_online_and_offline(fixtures, tmp_path):
    """A 15 s soundscape (rooster, quiet, rain) through the shipped model: the events are found
    where the sounds are, and /classify?events=true, `score --events` and the event messages of a
    stream agree (the rain's end too, where the audio ends)."""
    from batch.results import read_results, write_event_tables
    from batch.scoring import ScoreOptions, score

    model = Path(__file__).resolve().parents[2] / "models" / "default"
    proc, server = start_server(model, {}, tmp_path / "server.log")

    rate = 16_000  # PCM_16 at 16 kHz: 15 s fit the test server's 1 MB upload limit
    clips = [soxr.resample(*sf.read(fixtures / name, dtype="float32"), rate)
             for name in ("1-27724-A-1.ogg", "1-17367-A-10.ogg")]
    scene = np.concatenate([clips[0], np.zeros(5 * rate, np.float32), clips[1]])
    buf = io.BytesIO()
    sf.write(buf, scene, rate, format="WAV", subtype="PCM_16")
    try:
        online = post(server, "classify", buf.getvalue(), fields={"events": "true"}).json()
        assert "events" not in post(server, "classify", buf.getvalue()).json()
        pcm = sf.read(io.BytesIO(buf.getvalue()), dtype="int16")[0].astype("<i2").tobytes()  # the upload's samples
        messages, code, _ = stream(server, {"sample_rate": rate, "encoding": "pcm_s16le"}, [pcm[:99_999], pcm[99_999:]])
    finally:
        stop_server(proc)
    events = online["events"]
    assert [e["label"] for e in events] == ["rooster", "rain"], events
    assert events[0]["start_s"] < 1.0 and 1.5 < events[0]["end_s"] < 3.5  # the rooster crows in its first 2 s
    assert 9.9 <= events[1]["start_s"] < 11.0 and 14.0 < events[1]["end_s"] <= 15.1  # rain, 10-15 s
    assert code == 1000 and [{k: v for k, v in m.items() if k != "type"} for m in messages if m["type"] == "event"] \
        == messages[-1]["events"] == events

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "scene.wav").write_bytes(buf.getvalue())
    score([str(tmp_path / "in")], model, tmp_path / "out", ScoreOptions(workers=0, events=True, fmt="csv"))
    [row] = read_results(tmp_path / "out")
    assert row["events"] == events
    table = write_event_tables(tmp_path / "out", "dcase").read_text().splitlines()
    assert table[0] == "filename\tonset\toffset\tevent_label" and len(table) == 1 + len(events)


def test_search_without_index_is_404(test_artifact, fixtures, tmp_path):
    proc, url = start_server(test_artifact, {}, tmp_path / "server.log")
    try:
        r = post(url, "search", (fixtures / "1-27724-A-1.ogg").read_bytes())
        assert r.status_code == 404 and "SOUNDARC_INDEX" in r.json()["message"]
        bad = post(url, "search", (fixtures / "1-27724-A-1.ogg").read_bytes(), fields={"top_k": "-1"})
        assert bad.status_code == 422 and "top_k" in bad.json()["message"]  # the request's fault first
    finally:
        stop_server(proc)


def test_service_and_offline_scoring_agree(server, fixtures, fixture_index):
    """The same clips both ways: the same label, score, open-set fields and embedding."""
    from batch.results import read_results

    offline = {Path(r["id"]).name: r for r in read_results(fixture_index / "scores")}
    assert {r["label"] for r in offline.values()} <= set(LABELS)  # each fixture is a prototype: known
    for name, row in offline.items():
        online = post(server, "embed", (fixtures / name).read_bytes()).json()
        np.testing.assert_allclose(online["embedding"], row["embedding"], atol=1e-5)
        answer = post(server, "classify", (fixtures / name).read_bytes()).json()
        assert answer["label"] == row["label"] and answer["score"] == pytest.approx(row["score"], abs=1e-5)
        assert answer["open_set"]["unknown"] == row["unknown"]
        assert answer["open_set"]["angle_rad"] == pytest.approx(row["angle_rad"], abs=1e-5)
        assert [s["label"] for s in answer["ranking"]] == row["top_labels"]


def test_concurrent_requests_are_batched(fixtures, tmp_path):
    """Where the model is the bottleneck, the windows of concurrent requests share model calls. A
    model of width 64 takes longer per clip than decoding one (with the small shared test model, a
    CPU that decodes slowly next to its model speed ends each call before the next clip is decoded:
    nothing to batch)."""
    from tests.helpers import make_artifact

    model = make_artifact(tmp_path / "wide", width=64)
    proc, server = start_server(model, SERVER_SETTINGS, tmp_path / "server.log")  # the shared server's, another model
    data = encoded(fixtures, "WAV", "PCM_16", seconds=15)
    try:
        windows = len(post(server, "classify", data, fields={"windows": "true"}).json()["windows"])
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda _: post(server, "classify", data), range(16)))  # warm-up
            before = requests.get(f"{server}/stats", timeout=10).json()
            responses = list(pool.map(lambda _: post(server, "classify", data), range(16)))
        after = requests.get(f"{server}/stats", timeout=10).json()
    finally:
        stop_server(proc)
    assert [r.status_code for r in responses] == [200] * 16
    assert after["patches_scored"] - before["patches_scored"] == 16 * windows
    assert after["model_calls"] - before["model_calls"] < 16  # fewer model calls than requests
    assert len({tuple(x["label"] for x in r.json()["ranking"]) for r in responses}) == 1


def test_overload_is_503_with_retry_after(server, fixtures):
    data = (fixtures / "1-17367-A-10.ogg").read_bytes()
    with ThreadPoolExecutor(40) as pool:
        responses = list(pool.map(lambda _: post(server, "classify", data), range(40)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
    assert all(r.headers.get("Retry-After") for r in responses if r.status_code == 503)


def test_metrics(server, fixtures):
    post(server, "classify", (fixtures / "1-27724-A-1.ogg").read_bytes())
    text = requests.get(f"{server}/metrics", timeout=10).text
    for series in ("soundarc_patches_per_request", "soundarc_batch_size_bucket", 'stage="decode"', 'stage="features"',
                   'stage="inference"', "bentoml_service_request_duration_seconds"):
        assert series in text


def test_openapi_lists_the_endpoints(server):
    spec = requests.get(f"{server}/docs.json", timeout=10).json()
    assert {"/classify", "/embed", "/search"} <= set(spec["paths"])


@pytest.mark.parametrize("files,data,needle", [
    ([("file", ("dog.wav", b"RIFF", "audio/wav"))], {}, "unknown form field(s) ['file']"),  # the commonest mistake
    ([("audio", ("a.ogg", b"OggS", "audio/ogg")), ("audio", ("b.ogg", b"OggS", "audio/ogg"))], {}, "more than once"),
    ([("audio", ("a.ogg", b"OggS", "audio/ogg"))], {"topk": "3"}, "accepts ['audio', 'top_k'"),
])
def test_wrong_form_fields_are_422_naming_the_accepted_ones(server, files, data, needle):
    for endpoint in ("classify", "embed", "search"):
        r = requests.post(f"{server}/{endpoint}", files=files, data=data, timeout=30)
        if endpoint != "classify" and "topk" in data:
            continue
        assert r.status_code == 422, (endpoint, r.text)
        assert needle in r.json()["message"], r.json()


def test_a_clip_sent_url_encoded_is_422_telling_how_to_send_it(server, fixtures):
    # curl --data-binary @clip.ogg sends the clip as a url-encoded form: its bytes were echoed as field names
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    r = requests.post(f"{server}/classify", data=clip, timeout=30,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422 and "multipart/form-data" in r.json()["message"] and len(r.text) < 500, r.text[:600]


def test_a_file_name_of_thousands_of_characters_is_400_saying_why(server, fixtures):
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    r = requests.post(f"{server}/classify", files={"audio": ("a" * 5000 + ".ogg", clip, "audio/ogg")}, timeout=30)
    assert r.status_code == 400 and "over 4 KB" in r.json()["message"], r.text[:600]


def test_an_unknown_field_is_named_briefly(server):
    name = "x" * 3000
    r = requests.post(f"{server}/classify", files=[(name, ("a.ogg", b"OggS", "audio/ogg"))], timeout=30)
    assert r.status_code == 422 and "unknown form field" in r.json()["message"] and len(r.text) < 600, r.text[:600]


def test_options_in_the_url_are_422_not_ignored(server, fixtures):
    r = requests.post(f"{server}/classify?top_k=1", files={"audio": ("a.ogg", (fixtures / "1-27724-A-1.ogg").read_bytes())},
                      timeout=30)
    assert r.status_code == 422 and "not in the URL" in r.json()["message"] and "top_k=1" in r.json()["message"]


def test_a_field_name_that_is_not_utf8_is_a_4xx(server, fixtures):
    boundary = b"xyz"
    body = (b"--xyz\r\nContent-Disposition: form-data; name=\"\xff\xfe\"; filename=\"a.ogg\"\r\n"
            b"Content-Type: audio/ogg\r\n\r\n" + (fixtures / "1-27724-A-1.ogg").read_bytes() + b"\r\n--xyz--\r\n")
    r = requests.post(f"{server}/classify", data=body, timeout=30,
                      headers={"Content-Type": "multipart/form-data; boundary=" + boundary.decode()})
    assert r.status_code in (400, 422) and r.json()["message"], r.text


def test_a_body_cut_before_its_closing_boundary_is_400(server, fixtures):
    """The parser takes a body cut short for a whole one: without its last field, or with the clip cut."""
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    whole = (b'--B\r\nContent-Disposition: form-data; name="audio"; filename="a.ogg"\r\n\r\n' + clip +
             b'\r\n--B\r\nContent-Disposition: form-data; name="top_k"\r\n\r\n1\r\n--B--\r\n')
    headers = {"Content-Type": "multipart/form-data; boundary=B"}
    answered = requests.post(f"{server}/classify", data=whole, headers=headers, timeout=30)
    assert answered.status_code == 200 and len(answered.json()["ranking"]) == 1
    for cut in (whole[:-4], whole[:len(clip) // 2]):  # the closing "--" lost; the clip cut half-way
        r = requests.post(f"{server}/classify", data=cut, headers=headers, timeout=30)
        assert r.status_code == 400 and "closing boundary" in r.json()["message"], r.text
    bare = whole.replace(b"\r\n", b"\n")  # a hand-made body, lines ended the Unix way
    r = requests.post(f"{server}/classify", data=bare, headers=headers, timeout=30)
    assert r.status_code == 400 and "bare LF" in r.json()["message"], r.text
    for preamble in (b"This is a multi-part message in MIME format.\r\n",  # RFC 2046: for readers without multipart
                     b"a line\r\n--Bye, which is not the boundary\r\n"):  # begins as the boundary does
        r = requests.post(f"{server}/classify", data=preamble + whole, headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["ranking"] == answered.json()["ranking"], r.text


def test_a_content_type_of_other_bytes_is_a_whole_answer(server):
    """BentoML's access log decoded the request's Content-Type as UTF-8 after the answer had begun: the answer
    was cut short (its headers, no body)."""
    import http.client

    host, port = server.removeprefix("http://").split(":")
    for method, path, status in (("GET", "/classes", 200), ("POST", "/classify", 415)):
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.putrequest(method, path)
        connection.putheader("Content-Type", b"text/\xe9")
        connection.putheader("Content-Length", "0")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == status and response.read() and response.getheader("content-type") == "application/json"
        connection.close()


def test_readyz_errors_are_json(server):
    r = requests.put(f"{server}/readyz", timeout=10)
    assert r.status_code == 405 and r.json()["error"] == "MethodNotAllowed"


def test_an_answer_before_the_body_closes_the_connection(server):
    """A client that waits for 100-continue never sends the body: on a kept connection its next request
    was read as that body and never answered."""
    import socket

    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
                     b"Content-Length: 500000000\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes
            answer += chunk
    head = answer.split(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 413") and b"connection: close" in head, answer


def test_framework_errors_and_codings_are_named(server, fixtures):
    ranged = requests.get(f"{server}/ui", headers={"Range": "bytes=99999999-"}, timeout=30)
    assert ranged.status_code == 416 and "Range Not Satisfiable" in ranged.json()["message"], ranged.text  # was "{}"
    assert ranged.headers["content-range"].startswith("bytes */")
    gzipped = requests.post(f"{server}/classify", data=b"\x1f\x8b\x08\x00", timeout=30,
                            headers={"Content-Type": "multipart/form-data; boundary=B", "Content-Encoding": "gzip"})
    assert gzipped.status_code == 415 and "Content-Encoding gzip" in gzipped.json()["message"], gzipped.text
    plain = requests.post(f"{server}/classify", data=b"--B\r\n", timeout=30, headers={"Content-Type": "multipart/form-data"})
    assert plain.status_code == 400 and "400: " not in plain.json()["message"], plain.text  # Starlette's status prefix
    clip = (fixtures / "1-27724-A-1.ogg").read_bytes()
    starred = (b"--B\r\nContent-Disposition: form-data; name=\"audio\"; filename*=UTF-8''a.ogg\r\n\r\n" + clip
               + b"\r\n--B--\r\n")  # RFC 7578 4.2 allows no filename*: a text field
    r = requests.post(f"{server}/classify", data=starred, headers={"Content-Type": "multipart/form-data; boundary=B"},
                      timeout=30)
    assert r.status_code == 422 and "filename*" in r.json()["message"], r.text
    assert requests.get(f"{server}/stats?x=1", timeout=30).status_code == 422  # was ignored, as /classes refuses
