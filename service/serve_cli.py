"""`soundarc serve`: start the BentoML service on an artifact."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from core.artifact import DEFAULT_MODEL


def add_arguments(parser) -> None:
    parser.add_argument("--model", default=os.environ.get("SOUNDARC_MODEL", DEFAULT_MODEL), help="artifact directory")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=3000, help="port to listen on")
    parser.epilog = settings_help()


def settings_help() -> str:
    """The SOUNDARC_* settings with their defaults (service.settings), for --help."""
    from dataclasses import fields

    from service.settings import PREFIX, UNSET_MEANS, ServiceSettings

    names = ", ".join(
        f"{PREFIX}{f.name.upper()}=" + (f"({UNSET_MEANS[f.name]})" if f.default == "" else str(f.default))
        for f in fields(ServiceSettings)
    )
    return f"settings (environment variables, with their defaults; README.md explains each): {names}"


def run(args) -> int:
    model = Path(args.model)
    if not (model / "manifest.json").is_file():
        print(
            f"soundarc: cannot start: no model at {model}/ (no manifest.json). Export one there "
            f"(`soundarc export RUN_DIR {model}`) or pass --model DIR (SOUNDARC_MODEL).",
            file=sys.stderr,
        )
        return 2
    try:
        with socket.create_server((args.host, args.port), family=socket.AF_INET6 if ":" in args.host else socket.AF_INET):
            pass
    except (OSError, OverflowError) as e:  # OverflowError: a port beyond 0-65535
        reason = getattr(e, "strerror", None) or e
        print(f"soundarc: cannot listen on {args.host}:{args.port}: {reason} (set --port; PORT= with make)", file=sys.stderr)
        return 2
    env = {**os.environ, "SOUNDARC_MODEL": str(model.resolve()), "BENTOML_DO_NOT_TRACK": "True"}
    cmd = [sys.executable, "-m", "bentoml", "serve", "service.app:SoundArc", "--host", args.host, "--port", str(args.port)]
    sys.stdout.flush(), sys.stderr.flush()
    os.execve(sys.executable, cmd, env)  # bentoml takes this process: a SIGTERM to it stops the server and its workers
