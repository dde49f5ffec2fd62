"""The `soundarc` command. Each subcommand imports its package only when it runs, so that
`soundarc serve` never loads torch and `soundarc --help` is instant."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from soundarc import version

# subcommand -> module that defines add_arguments(parser) and run(args) -> int
COMMANDS = {
    "train": ("training.cli", "train an encoder: pretrain (SSL), finetune, eval"),
    "export": ("export.cli", "export a training run to a validated ONNX artifact"),
    "quantize": ("export.quantize", "an int8 artifact for CPUs from an fp32 one, calibrated and validated on real clips"),
    "serve": ("service.serve_cli", "serve an artifact over HTTP (BentoML)"),
    "score": ("batch.score_cli", "score directories, archives and lists offline: one row per input"),
    "index": ("batch.index_cli", "build or query a vector index of scored embeddings"),
    "stream": ("soundarc.stream_cli", "play an audio file to a server's /stream and print the live answers"),
}


# a module that an optional extra brings -> that extra
EXTRAS = {"torch": "train", "safetensors": "train", "matplotlib": "train", "onnx": "export", "onnxscript": "export",
          "bentoml": "serve", "ray": "ray", "faiss": "serve", "pyarrow": "serve"}


def at_least(lowest: int, highest: int | None = None):
    """An argparse type: an integer of at least `lowest` (and at most `highest`), refused with the option's name
    before anything runs."""
    def integer(text: str) -> int:
        value = int(text)  # not an integer: argparse says "invalid integer value"
        if value < lowest or (highest is not None and value > highest):
            within = f"from {lowest} to {highest}" if highest is not None else f"of at least {lowest}"
            raise argparse.ArgumentTypeError(f"must be an integer {within}, got {text}")
        return value
    return integer


def fraction(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = float(text)  # not a number: argparse says "invalid fraction value"
    if not 0 <= value <= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"must be a fraction from 0 to 1, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="soundarc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"soundarc {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only the chosen subcommand's module is imported: parse the name first.
    name = next((a for a in argv if not a.startswith("-")), None)
    for command, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(command, help=help_text, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if command == name:
            try:
                importlib.import_module(module).add_arguments(sp)
            except ModuleNotFoundError as e:
                return not_installed(command, e)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("faiss").setLevel(logging.WARNING)  # its loader's INFO lines about CPU builds read as failures
    from core.errors import SoundarcError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:  # what was committed stays (a rerun resumes where one can)
        print(f"soundarc {args.command}: interrupted", file=sys.stderr)
        return 130
    except SoundarcError as e:  # a user's mistake or bad data: say what, without a traceback
        print(f"soundarc {args.command}: {e.kind}: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        return not_installed(args.command, e)
    except OSError as e:  # a path that cannot be read or made (a file where a folder goes, no permission, no space)
        where = f": {e.filename}" if e.filename else ""
        print(f"soundarc {args.command}: {e.strerror or e}{where}", file=sys.stderr)
        return 2


def not_installed(command: str, e: ModuleNotFoundError) -> int:
    """An extra that is not installed (the serving venv has no torch, onnx): say which, exit 2."""
    package = (e.name or "").split(".")[0]
    extra = EXTRAS.get(package)
    if extra is None:
        raise e
    install = f"pip install -e '.[{extra}]'"
    if package == "torch":  # the CPU build first: a bare torch pulls several GB of CUDA
        install = f"pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && {install}"
    print(f"soundarc {command}: {e.name} is not installed; {install}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
