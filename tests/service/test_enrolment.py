"""Custom classes over HTTP: enrol, list, classify, delete, the 4xx rules, and a restart."""

import io

import numpy as np
import pytest
import requests
import soundfile as sf

from tests.service.conftest import SERVER_SETTINGS, start_server, stop_server

ROOSTER, DOG, RAIN = "1-27724-A-1.ogg", "1-100032-A-0.ogg", "1-17367-A-10.ogg"


def enrol(url, label, files, fixtures=None, **fields):
    uploads = [("audio", (name, data if isinstance(data, bytes) else (fixtures / data).read_bytes(), "audio/ogg"))
               for name, data in files]
    data = ({"label": label} if label is not None else {}) | fields
    return requests.post(f"{url}/classes", data=data, files=uploads, timeout=60)


def tone(seconds: float = 0.5, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate), rate, format="WAV")
    return buf.getvalue()


def silence(seconds: float = 2.0, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * rate), np.float32), rate, format="WAV")
    return buf.getvalue()


def classify(url, fixtures, name, **fields):
    files = {"audio": (name, (fixtures / name).read_bytes(), "audio/ogg")}
    return requests.post(f"{url}/classify", files=files, data=fields, timeout=60).json()


def test_enrol_classify_delete(server, fixtures):
    listed = requests.get(f"{server}/classes", timeout=10).json()
    assert listed["enrolment"] and [c["kind"] for c in listed["classes"]] == ["built-in"] * 3
    assert listed["enrol_gate"] == "window"  # the test model's (older artifacts' too)
    before = classify(server, fixtures, ROOSTER, open_set="false", top_k=3)["ranking"]
    assert sum(s["score"] for s in before) == pytest.approx(1.0, abs=1e-5)

    whistle = tone(2.0)
    made = enrol(server, "whistle", [("w.wav", whistle)], fixtures, margin="-0.01")
    assert made.status_code == 201, made.text
    assert made.json()["label"] == "whistle" and made.json()["examples"] == 1 and made.json()["classes"] == 4
    assert made.json()["margin"] == -0.01 and made.json()["warnings"] == []  # its own; without the field, the model's
    try:
        result = classify(server, fixtures, ROOSTER, open_set="false", windows="true", top_k=4)
        assert {r["label"] for r in result["ranking"]} == {"dog", "rain", "siren", "whistle"}
        assert sum(s["score"] for s in result["ranking"]) == pytest.approx(1.0, abs=1e-5)  # one scale for all
        assert result["label"] == result["ranking"][0]["label"]  # open_set=false: the top of the ranking
        assert all(w["label"] in {"dog", "rain", "siren", "whistle", "silence"} for w in result["windows"])
        heard = requests.post(f"{server}/classify", files={"audio": ("w.wav", whistle)}, timeout=60).json()
        assert heard["open_set"]["nearest_label"] == "whistle" and heard["open_set"]["angle_rad"] < 0.001
        assert heard["label"] != "unknown"  # unknown before enrolment (test_app), known now
        kinds = [c["kind"] for c in requests.get(f"{server}/classes", timeout=10).json()["classes"]]
        assert kinds == ["built-in"] * 3 + ["enrolled"]
    finally:
        gone = requests.delete(f"{server}/classes/%20Whistle", timeout=10)  # matched as enrolment matches
    assert gone.status_code == 200 and gone.json() == {"deleted": "whistle", "classes": 3}
    missing = requests.delete(f"{server}/classes/{'x' * 5000}", timeout=10)
    assert missing.status_code == 404 and len(missing.json()["message"]) < 200
    assert classify(server, fixtures, ROOSTER, open_set="false", top_k=3)["ranking"] == before


def test_an_example_cut_short_enrols_with_its_warning(server):
    made = enrol(server, "chirp", [("whole.wav", tone(2.0)), ("cut.wav", tone(2.0)[:-16_000])])
    try:
        assert made.status_code == 201, made.text
        assert len(made.json()["warnings"]) == 1
        assert made.json()["warnings"][0].startswith("example 'cut.wav': the data chunk declares")
    finally:
        requests.delete(f"{server}/classes/chirp", timeout=10)


def test_enrolment_errors_are_4xx(server, fixtures):
    cases = {
        "no label": (enrol(server, None, [("r.ogg", ROOSTER)], fixtures), 422),
        "bad label": (enrol(server, "../../etc/passwd", [("r.ogg", ROOSTER)], fixtures), 422),
        "built-in name": (enrol(server, "Dog", [("r.ogg", ROOSTER)], fixtures), 409),
        "margin not a number": (enrol(server, "m", [("r.ogg", ROOSTER)], fixtures, margin="close"), 422),
        "margin out of range": (enrol(server, "m", [("r.ogg", ROOSTER)], fixtures, margin="2"), 422),
        "margin nan": (enrol(server, "m", [("r.ogg", ROOSTER)], fixtures, margin="nan"), 422),
        "no clips": (requests.post(f"{server}/classes", data={"label": "x"}, timeout=10), 422),
        "21 clips": (enrol(server, "many", [(f"{i}.wav", tone()) for i in range(21)], fixtures), 422),
        "undecodable": (enrol(server, "noise", [("good.ogg", DOG), ("bad.ogg", b"not audio at all")], fixtures), 400),
        "empty": (enrol(server, "noise", [("empty.ogg", b"")], fixtures), 400),
        "silent": (enrol(server, "hush", [("hush.wav", silence())], fixtures), 400),
        "text audio": (requests.post(f"{server}/classes", data={"label": "x", "audio": "http://example.com"}, timeout=10), 422),
        "json body": (requests.post(f"{server}/classes", json={"label": "x"}, timeout=10), 415),
        "delete built-in": (requests.delete(f"{server}/classes/dog", timeout=10), 409),
        "delete missing": (requests.delete(f"{server}/classes/nothing", timeout=10), 404),
        "delete with options": (requests.delete(f"{server}/classes/nothing?x=1", timeout=10), 422),
        "list with options": (requests.get(f"{server}/classes?x=1", timeout=10), 422),
        "from another site": (requests.post(f"{server}/classes", data={"label": "csrf"}, timeout=10,
                                            files=[("audio", ("r.ogg", (fixtures / ROOSTER).read_bytes()))],
                                            headers={"Sec-Fetch-Site": "cross-site"}), 403),  # a page enrolled
        "deleted from another site": (requests.delete(f"{server}/classes/x", headers={"Sec-Fetch-Site": "same-site"},
                                                      timeout=10), 403),
        "from another origin": (requests.delete(f"{server}/classes/x", headers={"Origin": "http://evil.example"},
                                                timeout=10), 403),  # plain HTTP to a LAN address: no Sec-Fetch-Site
        "from a sandboxed frame": (requests.delete(f"{server}/classes/x", headers={"Origin": "null"}, timeout=10), 403),
        "from its own page": (requests.delete(f"{server}/classes/x", timeout=10, headers={
            "Origin": server, "Sec-Fetch-Site": "same-origin"}), 404),  # allowed: then no such class
        "from its own page over plain HTTP": (requests.delete(f"{server}/classes/x", headers={"Origin": server},
                                                              timeout=10), 404),
    }
    for case, (response, status) in cases.items():
        assert response.status_code == status, (case, response.text)
        assert response.json()["message"], case
    assert "bad.ogg" in cases["undecodable"][0].json()["message"]
    assert "hush.wav" in cases["silent"][0].json()["message"] and "no sound" in cases["silent"][0].json()["message"]
    assert len(requests.get(f"{server}/classes", timeout=10).json()["classes"]) == 3  # nothing half-enrolled
    head = requests.Request("HEAD", f"{server}/classes", data={"label": "via-head"},
                            files=[("audio", ("r.ogg", ROOSTER))]).prepare()  # a HEAD with an enrolment's form
    assert requests.Session().send(head, timeout=30).status_code == 200  # answered as GET: never a change
    assert len(requests.get(f"{server}/classes", timeout=10).json()["classes"]) == 3


def test_enrolled_classes_survive_a_restart(server, test_artifact, classes_file, fixtures, tmp_path):
    assert enrol(server, "dog two", [("a.ogg", DOG), ("b.ogg", RAIN)], fixtures).status_code == 201
    try:
        settings = {**SERVER_SETTINGS, "SOUNDARC_CLASSES": str(classes_file)}
        proc, url = start_server(test_artifact, settings, tmp_path / "restarted.log")
        try:
            enrolled = [c for c in requests.get(f"{url}/classes", timeout=10).json()["classes"] if c["kind"] == "enrolled"]
            assert [(c["label"], c["examples"]) for c in enrolled] == [("dog two", 2)]
            assert "dog two" in {r["label"] for r in classify(url, fixtures, DOG, top_k=10)["ranking"]}
        finally:
            stop_server(proc)
    finally:
        requests.delete(f"{server}/classes/dog%20two", timeout=10)


def test_web_page_is_served(server):
    page = requests.get(f"{server}/ui", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"] and "/ui/app.js" in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        response = requests.get(f"{server}/ui/{name}", timeout=10)
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert requests.get(f"{server}/ui/../service/app.py", timeout=10).status_code == 404
    assert requests.get(f"{server}/ui/secret.py", timeout=10).status_code == 404
    assert requests.get(f"{server}/ui/", timeout=10, allow_redirects=False).headers["location"] == "/ui"


def test_replicas_share_one_store(test_artifact, fixtures, tmp_path):
    """Two real servers on one classes file: a class enrolled or deleted through one is answered by
    the other at once, and concurrent enrolments through both lose none."""
    from concurrent.futures import ThreadPoolExecutor

    settings = {**SERVER_SETTINGS, "SOUNDARC_CLASSES": str(tmp_path / "shared" / "enrolled.json")}
    servers = [start_server(test_artifact, settings, tmp_path / f"replica{i}.log") for i in range(2)]
    (_, a), (_, b) = servers
    try:
        def labels(url):
            return {c["label"] for c in requests.get(f"{url}/classes", timeout=10).json()["classes"] if c["kind"] == "enrolled"}

        assert enrol(a, "from a", [("a.ogg", DOG)], fixtures).status_code == 201
        assert labels(b) == {"from a"}
        assert "from a" in {r["label"] for r in classify(b, fixtures, DOG, top_k=11)["ranking"]}
        assert enrol(b, "FROM A", [("a.ogg", RAIN)], fixtures).status_code == 409  # b knows a's class

        jobs = [(a if i % 2 else b, f"class {i}") for i in range(8)]
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda job: enrol(job[0], job[1], [("x.ogg", ROOSTER)], fixtures).status_code, jobs))
        assert statuses == [201] * 8
        assert labels(a) == labels(b) == {"from a"} | {f"class {i}" for i in range(8)}  # none lost

        assert requests.delete(f"{b}/classes/from%20a", timeout=10).status_code == 200
        again = enrol(a, "from a", [("a.ogg", DOG)], fixtures)  # a has not listed since: its first check must see the file
        assert again.status_code == 201, again.text
        assert requests.delete(f"{a}/classes/from%20a", timeout=10).status_code == 200
        assert "from a" not in labels(b)
    finally:
        for proc, _ in servers:
            stop_server(proc)


def test_a_model_that_gates_by_clips_answers_alike_over_http_offline_and_streamed(test_artifact, fixtures, tmp_path):
    """A class enrolled from a dog clip followed by a rain clip: the clip lies on its prototype. A model that gates by
    windows answers dog (the class wins windows by tiny shares, this random model's cosines lying close together); one
    that gates by clips names it, first in the ranking, alike over /classify, in the offline rows and at the end of a
    stream, whose window messages are /classify's timeline."""
    import shutil
    from dataclasses import replace

    import soxr

    from batch.results import read_results
    from batch.scoring import ScoreOptions, score
    from core.artifact import load_artifact
    from export.open_set import save_open_set
    from tests.service.conftest import stream

    gated = shutil.copytree(test_artifact, tmp_path / "gated")
    save_open_set(gated, replace(load_artifact(gated).open_set, enrol_gate="clip"))
    y = np.concatenate([soxr.resample(*sf.read(fixtures / name, dtype="float32"), 16_000) for name in (DOG, RAIN)])
    samples = (np.clip(y, -1, 1) * 32767).astype("<i2")
    wav = io.BytesIO()
    sf.write(wav, samples, 16_000, format="WAV", subtype="PCM_16")
    clip = wav.getvalue()
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "dog-rain.wav").write_bytes(clip)
    classes = tmp_path / "enrolled.json"
    proc, url = start_server(gated, {**SERVER_SETTINGS, "SOUNDARC_CLASSES": str(classes)}, tmp_path / "gated.log")
    try:
        assert enrol(url, "dog then rain", [("x.wav", clip)]).status_code == 201
        assert requests.get(f"{url}/classes", timeout=10).json()["enrol_gate"] == "clip"
        fields = {"top_k": "4", "windows": "true", "open_set": "false"}
        online = requests.post(f"{url}/classify", files={"audio": ("x.wav", clip)}, data=fields, timeout=60).json()
        setup = {"sample_rate": 16_000, "encoding": "pcm_s16le", "channels": 1, "top_k": 4, "open_set": False}
        pcm = samples.tobytes()
        messages, code, _ = stream(url, setup, [pcm[i:i + 7000] for i in range(0, len(pcm), 7000)])
    finally:
        stop_server(proc)
    assert online["label"] == online["ranking"][0]["label"] == "dog then rain"
    assert code == 1000 and messages[-1]["label"] == "dog then rain"
    assert [m["label"] for m in messages if m["type"] == "window"] == [w["label"] for w in online["windows"]]

    def offline(out):
        score([str(tmp_path / "audio")], gated, out, ScoreOptions(workers=0, top_k=4, open_set=False, classes=str(classes)))
        (row,) = read_results(out)
        return row
    row = offline(tmp_path / "by_clips")
    assert row["label"] == "dog then rain" and row["top_labels"] == [r["label"] for r in online["ranking"]]
    np.testing.assert_allclose(row["top_scores"], [r["score"] for r in online["ranking"]], atol=1e-5)
    save_open_set(gated, replace(load_artifact(gated).open_set, enrol_gate="window"))
    assert offline(tmp_path / "by_windows")["label"] == "dog"
