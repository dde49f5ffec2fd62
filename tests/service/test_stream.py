"""ws://.../stream against a real server: the same windows and answer as POST /classify for the same
audio, sent in pieces of any size; the close codes of the protocol."""

import contextlib
import io
import json
import math
import queue
import time

import httpx
import numpy as np
import pytest
import requests
import soundfile as sf
import soxr
from httpx_ws import WebSocketDisconnect, connect_ws

from tests.service.conftest import free_port, stream

RATE = 16_000


def pcm16(fixtures, names=("1-27724-A-1.ogg", "1-17367-A-10.ogg")) -> bytes:
    clips = [soxr.resample(*sf.read(fixtures / name, dtype="float32"), RATE) for name in names]
    y = np.concatenate([clips[0], np.zeros(2 * RATE, np.float32), *clips[1:]])
    return (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes()


def test_stream_gives_the_upload_answer(server, fixtures):
    audio = pcm16(fixtures)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(audio)), 40, replace=False))  # pieces of any size, samples split
    pieces = [audio[a:b] for a, b in zip([0, *cuts], [*cuts, len(audio)])]
    setup = {"sample_rate": RATE, "encoding": "pcm_s16le", "channels": 1, "top_k": 3, "open_set": False}
    messages, code, _ = stream(server, setup, pieces)
    assert code == 1000 and messages[0]["type"] == "ready" and messages[-1]["type"] == "summary"

    wav = io.BytesIO()
    sf.write(wav, np.frombuffer(audio, "<i2"), RATE, format="WAV", subtype="PCM_16")
    upload = requests.post(f"{server}/classify", files={"audio": ("a.wav", wav.getvalue())},
                           data={"top_k": "3", "windows": "true", "open_set": "false", "events": "true"}, timeout=60).json()
    windows = [m for m in messages if m["type"] == "window"]
    assert [(w["start_s"], w["end_s"], w["label"], w["score"]) for w in windows] == [
        (u["start_s"], u["end_s"], u["label"], u["score"]) for u in upload["windows"]]
    assert upload["windows"][-1]["end_s"] == upload["duration_s"]  # the last window's padding is not the clip's
    summary = messages[-1]
    assert summary["label"] == upload["label"] and summary["score"] == pytest.approx(upload["score"], abs=1e-5)
    assert [r["label"] for r in summary["labels"]] == [r["label"] for r in upload["ranking"]]
    assert summary["activity"] == upload["activity"] and summary["duration_s"] == upload["duration_s"]
    assert "windows" not in summary  # /classify's windows are a timeline, which the window messages were
    events = [{k: v for k, v in m.items() if k != "type"} for m in messages if m["type"] == "event"]
    assert events == summary["events"] == upload["events"]  # each sent once, as soon as final (none from the test model)


def test_stereo_float_stream(server, fixtures):
    y = np.frombuffer(pcm16(fixtures, ("1-27724-A-1.ogg",)), "<i2").astype(np.float32) / 32768
    stereo = np.stack([y, y], axis=1).astype("<f4").tobytes()
    setup = {"sample_rate": RATE, "encoding": "f32le", "channels": 2}
    messages, code, _ = stream(server, setup, [stereo[i:i + 8000] for i in range(0, len(stereo), 8000)])
    assert code == 1000 and messages[-1]["type"] == "summary" and messages[-1]["duration_s"] > 4.9


def test_a_stream_may_set_its_own_unknown_angle(server):
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(3 * RATE) / RATE)).astype("<f4").tobytes()  # far from every class
    setup = {"sample_rate": RATE, "encoding": "f32le", "channels": 1}
    messages, code, _ = stream(server, setup, [tone])
    assert code == 1000 and messages[-1]["label"] == "unknown"
    wide = {**setup, "threshold_rad": math.pi}  # for its windows and its summary
    messages, code, _ = stream(server, wide, [tone])
    assert code == 1000 and messages[-1]["label"] != "unknown" and messages[-1]["open_set"]["threshold_rad"] == round(math.pi, 6)
    assert "unknown" not in {m["label"] for m in messages if m["type"] == "window"}


def test_a_stream_answers_with_the_classes_of_its_set_up(server):
    """A class enrolled while a stream runs is not in its later windows, events or summary (it would change the
    events of windows already answered); a stream set up after the enrolment hears it."""
    y = (0.3 * np.sin(2 * np.pi * 440 * np.arange(8 * RATE) / RATE)).astype("<f4")
    wav = io.BytesIO()
    sf.write(wav, y[:2 * RATE], RATE, format="WAV")
    setup = {"sample_rate": RATE, "encoding": "f32le", "open_set": False}
    messages = []
    with httpx.Client() as client, connect_ws(f"{server}/stream", client) as ws:
        ws.send_text(json.dumps(setup))
        messages.append(ws.receive_json())
        ws.send_bytes(y[:RATE].tobytes())
        made = requests.post(f"{server}/classes", data={"label": "whistle"}, timeout=60,
                             files={"audio": ("w.wav", wav.getvalue(), "audio/wav")})
        assert made.status_code == 201, made.text
        try:
            ws.send_bytes(y[RATE:].tobytes())
            ws.send_text(json.dumps({"type": "end"}))
            with pytest.raises(WebSocketDisconnect):
                while True:
                    messages.append(ws.receive_json())
            after, code, _ = stream(server, setup, [y.tobytes()])
        finally:
            requests.delete(f"{server}/classes/whistle", timeout=10)
    windows = [m for m in messages if m["type"] == "window"]
    assert len(windows) > 10 and messages[-1]["type"] == "summary"
    assert "whistle" not in {r["label"] for m in windows for r in m["labels"]} | {r["label"] for r in messages[-1]["labels"]}
    assert code == 1000 and after[-1]["label"] == "whistle"


@pytest.mark.parametrize("setup,pieces,code,needle", [
    ({"sample_rate": 16000, "encoding": "mp3", "channels": 1}, [], 1008, "encoding"),
    ({"sample_rate": 5, "encoding": "f32le"}, [], 1008, "sample_rate"),
    ({"sample_rate": 16000, "encoding": "f32le", "colour": "red"}, [], 1008, "unknown set-up fields"),
    ("not json", [], 1008, "not JSON"),
    ({"sample_rate": 16000, "encoding": "f32le", "threshold_rad": "wide"}, [], 1008, "threshold_rad"),
    ({"sample_rate": 16000, "encoding": "f32le", "threshold_rad": 0}, [], 1008, "threshold_rad"),
    ({"sample_rate": 16000, "encoding": []}, [], 1008, "encoding"),
    ("[" * 100_000, [], 1008, "not JSON"),
    ({"sample_rate": "é" * 100, "encoding": "f32le"}, [], 1008, "sample_rate"),  # a reason over 123 bytes, cut
    ({"sample_rate": 16000, "encoding": "f32le", "日本語" * 30: 1}, [], 1008, "unknown set-up fields"),
    ({"sample_rate": 16000, "encoding": "f32le"}, [np.array([0.1, np.nan], "<f4").tobytes()], 1007, "NaN"),
    ({"sample_rate": 16000, "encoding": "f32le"}, [np.full(16000, 3e38, "<f4").tobytes()], 1007, "too large"),
    ({"sample_rate": 1000, "encoding": "pcm_s16le"}, [bytes(2 * 1000 * 21)], 1008, "limit"),  # 21 s at once, limit 20
    ({"sample_rate": 1000, "encoding": "pcm_s16le"}, [bytes(2 * 500)] * 41, 1008, "limit"),  # 20.5 s, the resampler behind
    ({"sample_rate": 16000, "encoding": "pcm_s16le"}, [bytes(3200), b'{"type": "end"}'], 1003, "text message"),  # was audio
])
def test_bad_streams_are_closed_with_their_code(server, setup, pieces, code, needle):
    messages, got, reason = stream(server, setup, pieces, end=False)
    assert got == code and needle in reason, (got, reason, messages)


def test_a_stream_that_ends_inside_a_sample_is_1007(server):
    setup = {"sample_rate": 16000, "encoding": "pcm_s16le", "channels": 2}
    messages, code, reason = stream(server, setup, [bytes(4000), b"\x00\x01\x02"])
    assert code == 1007 and "3 bytes into a sample" in reason, (code, reason, messages)


def test_a_stream_shorter_than_the_resampler_delay_is_answered(server):
    setup = {"sample_rate": 22_050, "encoding": "f32le"}
    messages, code, reason = stream(server, setup, [np.full(50, 0.5, "<f4").tobytes()])
    assert code == 1000 and messages[-1]["type"] == "summary", (code, reason)
    # two samples at 192 kHz are none at the model's rate: answered as the same upload is, "silence"
    messages, code, reason = stream(server, {**setup, "sample_rate": 192_000}, [np.full(2, 0.5, "<f4").tobytes()])
    assert code == 1000 and messages[-1]["label"] == "silence", (code, reason)


def test_audio_before_the_setup_is_1003(server):
    with httpx.Client() as client, connect_ws(f"{server}/stream", client) as ws:
        ws.send_bytes(b"\x00\x00")
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 1003


def test_options_in_the_url_are_refused_1008(server):
    with httpx.Client() as client, connect_ws(f"{server}/stream?top_k=3", client) as ws:
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
    assert info.value.code == 1008 and "set-up message, not the URL: got ?top_k=3" in info.value.reason


def test_too_many_streams_and_an_idle_one(server):
    setup = json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le"})
    with httpx.Client() as client, connect_ws(f"{server}/stream", client) as a, \
            connect_ws(f"{server}/stream", client) as b, connect_ws(f"{server}/stream", client) as c:
        for ws in (a, b):
            ws.send_text(setup)
            assert ws.receive_json()["type"] == "ready"
        c.send_text(setup)
        with pytest.raises(WebSocketDisconnect) as third:
            c.receive_json()
        assert third.value.code == 1013  # SOUNDARC_MAX_STREAMS=2 in the test server
        with pytest.raises(WebSocketDisconnect) as idle:
            a.receive_json()  # nothing sent for SOUNDARC_STREAM_IDLE_S=3 s
        assert idle.value.code == 1001


def test_messages_without_a_whole_sample_do_not_keep_a_stream_open(server):
    """Empty messages every 0.5 s: the stream still closes SOUNDARC_STREAM_IDLE_S (3 s) after
    its last whole sample, so such a client cannot hold a stream slot."""
    setup = json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le"})
    with httpx.Client() as client, connect_ws(f"{server}/stream", client) as ws:
        ws.send_text(setup)
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(b"\x00\x00" * 160)
        began = time.monotonic()
        with pytest.raises(WebSocketDisconnect) as idle:
            while time.monotonic() - began < 15:
                ws.send_bytes(b"")
                with contextlib.suppress(queue.Empty, TimeoutError):  # httpx-ws before 0.10, from 0.10
                    ws.receive_json(timeout=0.5)
    assert idle.value.code == 1001 and "no audio" in idle.value.reason
    assert time.monotonic() - began < 10


def test_plain_http_to_the_stream_route_is_426(server):
    r = requests.get(f"{server}/stream", timeout=10)
    assert r.status_code == 426 and r.headers["upgrade"] == "websocket" and "ws://" in r.json()["message"]


def test_the_stream_command(server, fixtures):
    import subprocess
    import sys

    url = server.replace("http://", "ws://") + "/stream"
    result = subprocess.run([sys.executable, "-m", "soundarc.cli", "stream", str(fixtures / "1-27724-A-1.ogg"), "--url", url,
                             "--fast", "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    messages = [json.loads(line) for line in result.stdout.splitlines()]
    assert messages[0]["type"] == "ready" and messages[-1]["type"] == "summary"
    assert sum(m["type"] == "window" for m in messages) == messages[-1]["activity"]["windows"] == 10
    result = subprocess.run([sys.executable, "-m", "soundarc.cli", "stream", str(fixtures / "1-27724-A-1.ogg"), "--url", url,
                             "--fast", "--json", "--threshold-rad", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "1008" in result.stderr and "threshold_rad" in result.stderr
    result = subprocess.run([sys.executable, "-m", "soundarc.cli", "stream", str(fixtures / "README.md"), "--url", url],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot read" in result.stderr and "Traceback" not in result.stderr
    nobody = f"ws://127.0.0.1:{free_port()}/stream"
    result = subprocess.run([sys.executable, "-m", "soundarc.cli", "stream", str(fixtures / "1-27724-A-1.ogg"), "--url",
                             nobody, "--fast"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "cannot reach" in result.stderr and "Traceback" not in result.stderr


def test_a_text_frame_that_is_not_utf8_is_closed_1007(server):
    """A frame no WebSocket library would send (so raw bytes on a socket): closed with its code, not dropped."""
    import base64
    import os
    import socket

    host, port = server.removeprefix("http://").split(":")

    def frame(opcode: int, payload: bytes) -> bytes:  # a masked client frame, payload < 126 bytes
        mask = os.urandom(4)
        return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    with socket.create_connection((host, int(port)), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(f"GET /stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 101")
        s.sendall(frame(1, b'{"sample_rate": 16000, "encoding": "pcm_s16le"}'))
        assert b"ready" in s.recv(4096)
        s.sendall(frame(1, b"\xff\xfe"))
        reply = s.recv(4096)
    assert reply[0] == 0x88 and int.from_bytes(reply[2:4], "big") == 1007, reply  # a close frame, code 1007
