"""soundarc.client against a real server: every route, and errors as ServerError."""

import io
import os
import threading
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import soundfile as sf

from soundarc.client import Client, ServerError


def test_every_route(server, fixtures):
    rooster = fixtures / "1-27724-A-1.ogg"
    with Client(server) as client:
        assert client.ready()["status"] == "ready"
        answer = client.classify(rooster, top_k=3, windows=True)
        assert answer.label == answer.raw["label"] and len(answer.ranking) == 3 and answer.warnings == []
        assert answer.windows and answer.activity["windows"] == len(answer.windows)
        assert answer.events is None and client.classify(rooster, events=True).events is not None
        assert answer.spectrogram is None and client.classify(rooster, spectrogram=True).spectrogram["n_mels"] > 0
        tone = io.BytesIO()  # far from every class of the test model
        sf.write(tone, 0.5 * np.sin(2 * np.pi * 440 * np.arange(22_050) / 22_050), 22_050, format="WAV")
        assert client.classify(tone.getvalue()).label == "unknown"
        assert client.classify(tone.getvalue(), threshold_rad=3.14).label != "unknown"
        vector = client.embed(rooster.read_bytes()).embedding
        assert vector is not None and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
        assert client.search(rooster, top_k=2)[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
        assert client.stats()["model_calls"] >= 1
        enrolled = client.enrol("client test class", [rooster, fixtures / "1-100032-A-0.ogg"], margin=0.02)
        assert enrolled["label"] == "client test class" and enrolled["examples"] == 2 and enrolled["margin"] == 0.02
        assert "client test class" in [c["label"] for c in client.classes()]
        assert client.delete_class("client test class")["deleted"] == "client test class"


def test_errors_are_server_errors(server):
    with Client(server) as client:
        with pytest.raises(ServerError) as info:
            client.classify(b"not audio at all")
        assert info.value.status == 400 and info.value.kind == "UndecodableAudio" and info.value.message
        with pytest.raises(ServerError) as info:
            client.classify(b"x", top_k=0)
        assert info.value.status == 422
        with pytest.raises(ServerError) as info:
            client.classify(b"x", threshold_rad=4.0)
        assert info.value.status == 422 and "threshold_rad" in info.value.message
        for label in ("never enrolled", "what?#", "client%20test"):  # escaped: never another class's name
            with pytest.raises(ServerError) as info:
                client.delete_class(label)
            assert info.value.status == 404 and repr(label)[1:-1] in info.value.message, info.value.message


@pytest.mark.parametrize("answer", [{"detail": "a proxy's own JSON"}, [], {"label": "dog", "ranking": [1]}, "text"])
def test_a_success_that_is_not_soundarcs_answer_is_a_server_error(answer):
    import httpx

    client = Client()
    client.http = httpx.Client(base_url="http://soundarc.test", transport=httpx.MockTransport(
        lambda request: httpx.Response(200, json=answer)))
    for call in (lambda: client.classify(b"x"), lambda: client.embed(b"x"), lambda: client.search(b"x"), client.classes):
        with pytest.raises(ServerError) as info:
            call()
        assert info.value.kind == "UnexpectedAnswer" and "not soundarc's" in info.value.message


def test_retry_after_is_seconds_within_reason():
    from soundarc.client import _retry_after

    assert [_retry_after(v) for v in ("2", "-5", "1e9", "nan", "Wed, 21 Oct 2026 07:28:00 GMT", None)] == \
        [2.0, 0.0, 30.0, 1.0, 1.0, 1.0]


def test_stream(server, fixtures):
    import soundfile as sf

    y, rate = sf.read(fixtures / "1-27724-A-1.ogg", dtype="int16")
    pcm = y.astype("<i2").tobytes()
    with Client(server) as client:
        messages = list(client.stream((pcm[i:i + 8820] for i in range(0, len(pcm), 8820)), sample_rate=rate))
        assert messages[-1]["type"] == "summary" and messages[-1]["activity"]["windows"] == 10
        assert sum(m["type"] == "window" for m in messages) == 10
        with patch("soundarc.client.STREAM_MESSAGE_BYTES", 4097):  # one chunk sent as odd-sized messages
            whole = list(client.stream([pcm], sample_rate=rate))
        assert whole[-1] == messages[-1]
        with pytest.raises(ServerError) as info:
            list(client.stream([b"\x00"], sample_rate=rate))  # half a sample
        assert info.value.status == 1007
        with pytest.raises(ServerError) as info:
            list(client.stream([b"\x00\x00"], sample_rate=rate, threshold_rad=0.0))
        assert info.value.status == 1008
    with Client(f"{server}/elsewhere") as client, pytest.raises(ServerError) as info:  # no /stream there
        list(client.stream([b"\x00\x00"], sample_rate=rate))
    assert info.value.kind == "UpgradeRefused" and 400 <= info.value.status < 500 and "/elsewhere/stream" in info.value.message


STREAM_SCRIPT = """
import sys, time
import httpx
from soundarc.client import Client, ServerError
from tests.fake_stream import serve

chunks = (b"\\\\x00" * 65536 for _ in range(int(sys.argv[2])))  # 256 KiB each, as fast as they go
started = time.monotonic()
try:
    with Client(serve(sys.argv[1]), timeout_s=2) as client:
        for message in client.stream(chunks, sample_rate=16000):
            pass
except (httpx.TransportError, ServerError) as e:
    print(type(e).__name__, e, round(time.monotonic() - started))
"""


@pytest.mark.parametrize("behaviour, chunks, expected", [
    ("stall", 2, "ReadTimeout the server sent nothing for 2 s"),  # all sent, no summary ever comes
    ("stall", 4000, "ReadError the connection to the server was lost mid-stream"),  # the send buffers fill up
    ("drop", 4000, "ReadError the connection to the server was lost mid-stream"),  # the server is gone
    ("close", 4000, "ServerError 1008 StreamClosed: the stream is longer than the limit"),  # its code, not "lost"
])
def test_a_stream_to_a_server_that_stalls_or_drops_ends_and_lets_the_process_exit(behaviour, chunks, expected):
    """A stalled or vanished server is a TransportError within the client's timeout (twice it for a blocked send),
    a close while sending is its code, and the process exits (httpx-ws's reading thread was left blocked on a
    closed socket, and its keepalive timeout raised a traceback)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", STREAM_SCRIPT, behaviour, str(chunks)], capture_output=True,
                            text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert result.returncode == 0 and result.stdout.startswith(expected), (result.stdout, result.stderr[-2000:])
    assert int(result.stdout.split()[-1]) <= 30, result.stdout  # bounded (2 s of silence, on a loaded machine)


def test_the_stream_command(server, fixtures, tmp_path, capsys):
    """`soundarc stream`: a file read a block at a time (a pipe's Ogg too), the URL taken apart (a trailing /,
    options refused), a file that cannot be read on ends in one line."""
    import subprocess
    import sys

    from soundarc.cli import main

    rooster = fixtures / "1-27724-A-1.ogg"
    ws = server.replace("http://", "ws://")
    assert main(["stream", str(rooster), "--fast", "--url", f"{ws}/stream/"]) == 0
    assert "summary: " in capsys.readouterr().out
    with open(rooster, "rb") as stdin:  # libsndfile reads "-" from the process's stdin, an Ogg too (it cannot seek there)
        piped = subprocess.run([sys.executable, "-m", "soundarc.cli", "stream", "-", "--fast", "--url", f"{ws}/stream"],
                               stdin=stdin, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and "summary: " in piped.stdout, piped.stderr[-2000:]
    assert main(["stream", str(rooster), "--url", f"{ws}/stream?top_k=3"]) == 2
    assert "--url takes no options" in capsys.readouterr().err
    lying = tmp_path / "lying.flac"  # its header announces far more samples than it holds
    sf.write(lying, np.zeros(16_000, np.float32), 16_000, format="FLAC")
    data = bytearray(lying.read_bytes())
    data[22:26] = b"\x0f\xff\xff\xff"  # STREAMINFO's total samples: the low 32 of its 36 bits
    lying.write_bytes(bytes(data))
    code = main(["stream", str(lying), "--fast", "--url", f"{ws}/stream"])
    err = capsys.readouterr().err
    assert code in (0, 1) and "Traceback" not in err and ("cannot read" in err or "header announces" in err), err
    cut = tmp_path / "cut.wav"  # libsndfile gives the frames a cut WAV holds: only its data chunk tells
    sf.write(cut, np.zeros(16_000, np.float32), 16_000, subtype="PCM_16")
    cut.write_bytes(cut.read_bytes()[:20_000])
    assert main(["stream", str(cut), "--fast", "--url", f"{ws}/stream"]) == 0
    assert "data chunk declares 32000 bytes of samples, the file holds 19956" in capsys.readouterr().err
    fifo = tmp_path / "fifo.wav"  # a pipe by name: read once, never opened again to look for a shortfall
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(cut.read_bytes()), daemon=True)
    writer.start()
    assert main(["stream", str(fifo), "--fast", "--url", f"{ws}/stream"]) == 0
    writer.join(5)
    assert "Traceback" not in capsys.readouterr().err
