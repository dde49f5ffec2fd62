"""`soundarc export RUN_DIR OUT_DIR [--fp16] [--opset N] [--audio FILE...]`."""

from __future__ import annotations

import argparse
import json
import signal
from pathlib import Path

from core.classes import margin_ok
from core.errors import ConfigError
from core.openset import ENROL_MARGIN, GATES, VOTES, temperature_ok, weight_ok
from soundarc.cli import fraction


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="a training run with a classifier (finetune or linear probe)")
    parser.add_argument("out_dir", help="artifact directory to write (an artifact there is replaced once the new one "
                        "is whole; anything else there is refused)")
    parser.add_argument("--fp16", action="store_true", help="also write a float16 variant for CUDA")
    parser.add_argument("--opset", type=int, default=18)
    parser.add_argument("--audio", nargs="+", type=Path, help="real clips for the parity check (default: test fixtures)")
    parser.add_argument("--pretrained-share", type=float, default=0.0,
                        help="join the embedding with the run's pre-trained encoder (its init), this share of the "
                             "cosine (0: the fine-tuned embedding alone; BENCHMARKS.md, 'Joint embedding')")
    parser.add_argument("--pretrained", help="with --pretrained-share: join this pre-training run's encoder instead")
    parser.add_argument("--open-set", action="store_true",
                        help="add class prototypes and an 'unknown' threshold (reads the run's training data)")
    parser.add_argument("--frr", type=fraction, default=0.05, help="open set: false-rejection rate to calibrate for")
    parser.add_argument("--calibration-folds", type=int, nargs="*", default=[],
                        help="open set: folds to calibrate on (default: the training clips)")
    parser.add_argument("--labeled", help="open set: labelled data (default: the run's)")
    parser.add_argument("--calibration", help="open set: the threshold from cross-validation "
                        "(reports/openset_cv.json of benchmarks/openset_cv.py); overrides --frr/--calibration-folds")
    parser.add_argument("--enrol-margin", type=_margin, default=ENROL_MARGIN,
                        help="open set: cosine by which an enrolled class must beat the head's (benchmarks/enrol_cost.py)")
    parser.add_argument("--prototype-weight", type=_weight, default=0.0,
                        help="open set: w in [0, 1], the built-in classes ranked by (1 − w)·head + w·prototypes on the "
                             "head's scale (benchmarks/fusion_cv.py; 0: the head alone)")
    parser.add_argument("--temperature", type=_temperature, default=1.0,
                        help="open set: T > 0 that sharpens (T < 1) or flattens the scores, p^(1/T) renormalised, so "
                             "they are calibrated; no order changes (benchmarks/calibration_cv.py; the event "
                             "thresholds were chosen at one T: events_cv.py)")
    parser.add_argument("--vote", choices=VOTES, default="mean",
                        help="open set: how a clip's windows with sound make its ranking: their mean, or their mean "
                             "weighted by amplitude (benchmarks/vote_cv.py; fit the temperature at it)")
    parser.add_argument("--enrol-gate", choices=GATES, default="window",
                        help="open set: where an enrolled class is answered: in the windows it wins by its margin, or "
                             "also for a whole clip whose embedding is nearer its prototype than any built-in class's (by the "
                             "margin where positive; benchmarks/enrol_cost.py --clip-gate)")


def _weight(text: str) -> float:
    """--prototype-weight: a number in [0, 1], refused before anything is exported."""
    w = float(text)
    if not weight_ok(w):
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return w


def _margin(text: str) -> float:
    """--enrol-margin: a difference of cosines, in [-1, 1] (NaN would let no enrolled class ever win)."""
    margin = float(text)
    if not margin_ok(margin):
        raise argparse.ArgumentTypeError(f"must be a number from -1 to 1, got {text}")
    return margin


def _temperature(text: str) -> float:
    """--temperature: a finite number above 0, refused before anything is exported."""
    t = float(text)
    if not temperature_ok(t):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return t


def run(args) -> int:
    given = {"--prototype-weight": args.prototype_weight != 0.0, "--temperature": args.temperature != 1.0,
             "--vote": args.vote != "mean", "--frr": args.frr != 0.05, "--calibration-folds": bool(args.calibration_folds),
             "--labeled": args.labeled is not None, "--calibration": args.calibration is not None,
             "--enrol-margin": args.enrol_margin != ENROL_MARGIN, "--enrol-gate": args.enrol_gate != "window"}
    needless = [option for option, set_ in given.items() if set_]
    if needless and not args.open_set:  # each is kept in the open set's file: without it, ignored without a word
        raise ConfigError(f"{', '.join(needless)} {'needs' if len(needless) == 1 else 'need'} --open-set "
                          "(the open set's file keeps it)")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: the staging folder is removed
    from export.onnx_export import export_artifact, smoke_test

    finish = None
    if args.open_set:
        from export.open_set import attach_open_set
        from training.run import read_checkpoint_info

        config = read_checkpoint_info(args.run_dir)["config"]  # a missing run: a ConfigError naming it

        def finish(staged: Path) -> None:  # before the artifact replaces OUT_DIR: a failure leaves it as it was
            attach_open_set(staged, args.labeled or config["labeled"], tuple(config["train_folds"]),
                            tuple(args.calibration_folds), args.frr, args.calibration, args.enrol_margin,
                            args.prototype_weight, args.temperature, args.vote, args.enrol_gate)
    out = export_artifact(args.run_dir, args.out_dir, fp16=args.fp16, opset=args.opset, real_audio=args.audio,
                          pretrained_share=args.pretrained_share, pretrained=args.pretrained, finish=finish)
    manifest = json.loads((out / "manifest.json").read_text())
    print(json.dumps({"artifact": str(out), "model_id": manifest["model_id"], "parity": manifest["parity"],
                      "smoke_test": {k: str(v) for k, v in smoke_test(out).items()}}, indent=2))
    return 0
