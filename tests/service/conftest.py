"""A real server on 127.0.0.1, serving a small exported artifact, for the HTTP tests."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import requests
from httpx_ws import WebSocketDisconnect, connect_ws

ROOT = Path(__file__).resolve().parents[2]
SERVER_SETTINGS = {  # small limits so that the 413 and 503 paths are cheap to reach
    "SOUNDARC_WORKERS": "1",  # the limits below are per worker; tests/service/test_workers.py runs two
    "SOUNDARC_MAX_UPLOAD_MB": "1",
    "SOUNDARC_MAX_DURATION_S": "20",
    "SOUNDARC_MAX_IN_FLIGHT": "16",
    "SOUNDARC_MAX_BATCH_SIZE": "256",
    "SOUNDARC_MAX_STREAMS": "2",
    "SOUNDARC_STREAM_IDLE_S": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, env_extra: dict, log_path: Path, timeout_s: float = 120, cli: bool = False):
    """A server on a free port, started by `bentoml serve` (by `soundarc serve` with cli): (process, url)."""
    port = free_port()
    env = {**os.environ, "SOUNDARC_MODEL": str(model), "BENTOML_DO_NOT_TRACK": "True",
           "BENTOML_HOME": str(log_path.parent / f"bentoml-{port}"), **env_extra}  # own Prometheus directory
    command = [sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc", "--host", "127.0.0.1", "--port", str(port)]
    if cli:
        command = [str(Path(sys.executable).parent / "soundarc"), "serve", "--model", str(model), "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"server not ready in {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def stop_server(proc) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group has ended already
        pass


def stream(url, setup: dict, pieces: list[bytes], end=True) -> tuple[list[dict], int, str]:
    """(messages, close code, reason) of one stream."""
    messages = []
    with httpx.Client() as client, connect_ws(f"{url}/stream", client) as ws:
        ws.send_text(json.dumps(setup) if isinstance(setup, dict) else setup)
        try:
            for piece in pieces:
                ws.send_bytes(piece)
            if end:
                ws.send_text(json.dumps({"type": "end"}))
            while True:
                messages.append(ws.receive_json())
        except WebSocketDisconnect as e:
            return messages, e.code, e.reason
    raise AssertionError("the server did not close")


@pytest.fixture(scope="session")
def fixture_index(test_artifact, tmp_path_factory) -> Path:
    """The committed fixtures scored offline with the test model, and indexed."""
    from batch.index import build_index
    from batch.scoring import ScoreOptions, score

    root = tmp_path_factory.mktemp("index")
    score([str(Path(__file__).parents[1] / "fixtures")], test_artifact, root / "scores",
          ScoreOptions(workers=0, embeddings=True))
    build_index(root / "scores", root / "index")
    return root


@pytest.fixture(scope="session")
def classes_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("classes") / "enrolled.json"


@pytest.fixture(scope="session")
def server(test_artifact, fixture_index, classes_file, tmp_path_factory):
    settings = {**SERVER_SETTINGS, "SOUNDARC_INDEX": str(fixture_index / "index"),
                "SOUNDARC_CLASSES": str(classes_file)}
    proc, url = start_server(test_artifact, settings, tmp_path_factory.mktemp("logs") / "server.log")
    yield url
    stop_server(proc)
