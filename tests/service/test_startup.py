"""A server with a bad configuration exits at once, non-zero, with one line naming the problem:
no restart loop. Real processes: `bentoml serve` as users run it, and `soundarc serve`."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.service.conftest import free_port, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]


def serve(env_extra: dict, tmp_path: Path, command=None, timeout_s: float = 60) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of a server start that must fail."""
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(tmp_path / "bentoml"), **env_extra}
    command = command or [sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc",
                          "--host", "127.0.0.1", "--port", str(free_port())]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    return result.returncode, result.stderr, time.monotonic() - started


def broken(test_artifact: Path, tmp_path: Path, what: str) -> dict:
    """SOUNDARC_* settings with one thing wrong."""
    model = tmp_path / "model"
    shutil.copytree(test_artifact, model)
    if what == "tampered model":
        with open(model / "model.onnx", "ab") as f:
            f.write(b"x")
        return {"SOUNDARC_MODEL": str(model)}
    if what == "classes of another model":
        (tmp_path / "classes.json").write_text(json.dumps({"model_id": "another", "classes": []}))
        return {"SOUNDARC_MODEL": str(model), "SOUNDARC_CLASSES": str(tmp_path / "classes.json")}
    if what == "no index there":
        return {"SOUNDARC_MODEL": str(model), "SOUNDARC_INDEX": str(tmp_path / "nowhere")}
    if what == "front-end of another size":  # the workers could not run it: no restart loop
        frontend = json.loads((model / "frontend.json").read_text())
        (model / "frontend.json").write_text(json.dumps({**frontend, "n_mels": 64}))
        manifest = json.loads((model / "manifest.json").read_text())
        del manifest["files"]  # as an artifact exported before the front-end's sha256 was kept
        (model / "manifest.json").write_text(json.dumps(manifest))
        return {"SOUNDARC_MODEL": str(model)}
    if what == "setting out of range":
        return {"SOUNDARC_MODEL": str(model), "SOUNDARC_MAX_BATCH_SIZE": "0"}
    if what == "setting of the wrong type":
        return {"SOUNDARC_MODEL": str(model), "SOUNDARC_MAX_UPLOAD_MB": "lots"}
    raise AssertionError(what)


@pytest.mark.parametrize("what,needle", [
    ("tampered model", "model.onnx has sha256"), ("classes of another model", "classes.json"),
    ("no index there", "nowhere"), ("front-end of another size", "sizes"),
    ("setting out of range", "SOUNDARC_MAX_BATCH_SIZE=0"),
    ("setting of the wrong type", "SOUNDARC_MAX_UPLOAD_MB='lots'"),
])
def test_bad_configuration_exits_with_one_line(test_artifact, tmp_path, what, needle):
    status, stderr, seconds = serve(broken(test_artifact, tmp_path, what), tmp_path)
    assert status == 2 and seconds < 30, (status, seconds, stderr[-2000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("soundarc: cannot start:") and needle in lines[0], stderr[-2000:]


def test_a_port_in_use_or_out_of_range_is_one_line(test_artifact, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        command = [str(Path(sys.executable).parent / "soundarc"), "serve", "--model", str(test_artifact),
                   "--port", str(port)]
        status, stderr, _ = serve({}, tmp_path, command)
    assert status == 2 and stderr.strip().count("\n") == 0 and f"127.0.0.1:{port}" in stderr, stderr
    status, stderr, _ = serve({}, tmp_path, [*command[:-1], "99999"])
    assert status == 2 and stderr.strip().count("\n") == 0 and "127.0.0.1:99999" in stderr, stderr


def test_soundarc_serve_stops_with_its_workers_on_sigterm(test_artifact, tmp_path):
    """`soundarc serve` is the server's process: a SIGTERM to it (kill, systemd, timeout) stops the server and its
    workers, and the port is free again (it ran bentoml as a child, which the signal left serving)."""
    proc, url = start_server(test_artifact, {"SOUNDARC_WORKERS": "1"}, tmp_path / "serve.log", cli=True)
    try:
        proc.send_signal(signal.SIGTERM)  # to the process alone, not its group
        proc.wait(timeout=30)
        host, port = url.removeprefix("http://").split(":")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                break  # nothing listens
            time.sleep(0.5)
        else:
            raise AssertionError(f"{url} still answers after its soundarc serve was stopped")
    finally:
        stop_server(proc)
