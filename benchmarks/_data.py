"""Where benchmarks find ../shared/data; they skip with a clear message when it is absent."""

import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SOUNDARC_DATA", ROOT.parent / "shared" / "data"))
REPORTS = ROOT / "reports"
CV_RUNS = ROOT / "runs" / "cv"  # benchmarks/cv_study.py: CV_RUNS/<arm>/fold<F>-seed<S>
PRETRAIN_RUNS = ROOT / "runs" / "pretrain"
CV_FOLDS = (1, 2, 3, 4)  # the folds of the study; a fifth (held back for acceptance) is in none of its runs


def training_clips(clips: list, held_fold: int) -> list:
    """The clips a CV run of `held_fold` learnt from: the study's other folds (never an acceptance fold)."""
    return [c for c in clips if c.fold in CV_FOLDS and c.fold != held_fold]


def machine() -> str:
    """This machine for a report: the CPU model (figures differ between CPUs of one kind) and its cores."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    return f"{names[0] if names else platform.machine()}, {os.cpu_count()} cores"


def require_data(sub: str) -> Path:
    path = DATA / sub
    if not path.is_dir():
        print(f"skipped: {path} not found (benchmarks read ../shared/data or $SOUNDARC_DATA)", file=sys.stderr)
        sys.exit(0)
    return path


def cv_runs(arm: str, seed: int | None = None) -> list[Path]:
    """The finished cross-validation runs of an arm (those with a cv.json), of one seed or all."""
    pattern = "fold*-seed*" if seed is None else f"fold*-seed{seed}"
    return sorted(p for p in (CV_RUNS / arm).glob(pattern) if (p / "cv.json").exists())


def group_runs_of(group: str) -> tuple[str, list[Path]]:
    """ARM or ARM:SEED,SEED -> (ARM, its finished CV runs of those seeds); none is an error."""
    arm, _, seeds = group.partition(":")
    runs = [r for s in (seeds.split(",") if seeds else [None]) for r in cv_runs(arm, s)]
    if not runs:
        raise SystemExit(f"{group}: no finished CV runs (benchmarks/cv_study.py, or soup_cv.py for -soup and -ens arms)")
    for seed in seeds.split(",") if seeds else []:  # a seed of some folds only would weigh its folds unevenly
        folds = sorted(fold_of(r) for r in runs if r.name.endswith(f"-seed{seed}"))
        if folds != list(CV_FOLDS):
            raise SystemExit(f"{group}: seed {seed} has finished folds {folds}, not all of {list(CV_FOLDS)}")
    return arm, runs


def add_joint_arguments(parser, share_help: str) -> None:
    """--pretrained-share S [--pretrained RUN]: served with the joint embedding (training.model.InferenceModel)."""
    parser.add_argument("--pretrained-share", type=float, default=0.0, help=share_help)
    parser.add_argument("--pretrained", help="... joined with this pre-training run's encoder (runs/pretrain/NAME) "
                        "instead of each run's own init")


def joint_arguments(parser, args) -> tuple[float, str | None]:
    """(share, pretrained) of add_joint_arguments; an encoder without a share is an error."""
    if args.pretrained and not args.pretrained_share:
        parser.error("--pretrained joins an encoder to the embedding: give --pretrained-share too")
    if args.pretrained and heard_labelled_folds(args.pretrained):
        parser.error(f"--pretrained {args.pretrained} was pre-trained on the labelled folds too: joined to every "
                     "CV run, it would have heard each held-out fold (pre-train it with pretrain_labeled=false)")
    return args.pretrained_share, args.pretrained


def heard_labelled_folds(pretrained: str | Path) -> bool:
    """Whether a pre-training run, or one it continued from (init), had the labelled clips in its pool
    (pretrain_labeled). A path that is no run: False (loading it says why)."""
    checkpoint = Path(pretrained) / "checkpoint" / "checkpoint.json"
    if not checkpoint.is_file():
        return False
    config = json.loads(checkpoint.read_text())["config"]
    return config.get("pretrain_labeled", True) or bool(config.get("init") and heard_labelled_folds(config["init"]))


def encoder_tag(pretrained: str | Path | None) -> str:
    """'' for a run's own init, else '-' + the encoder's path under runs/pretrain with '/' as '-'
    (runs/pretrain/ssl-acl-rc -> '-ssl-acl-rc', runs/pretrain/ssl-acl-dapt/fold1 -> '-ssl-acl-dapt-fold1')."""
    if not pretrained:
        return ""
    path = Path(pretrained).resolve()
    name = path.relative_to(PRETRAIN_RUNS) if path.is_relative_to(PRETRAIN_RUNS) else Path(path.name)
    return "-" + "-".join(name.parts)


def cv_result(run: Path, pretrained_share: float = 0.0, pretrained: str | Path | None = None) -> Path:
    """A CV run's scores: cv.json, or cv-share<S>.json for its joint embedding (cv_study.py --pretrained-share),
    cv-share<S>-<NAME>.json where the joint encoder is runs/pretrain/NAME rather than the run's own init."""
    if not pretrained_share:
        return run / "cv.json"
    return run / f"cv-share{pretrained_share:g}{encoder_tag(pretrained)}.json"


def cv_run(arm: str, fold: int, seed: int | str) -> Path:
    """The directory of one cross-validation run: fold `fold` held out, seed `seed` (a soup: "0+1")."""
    return CV_RUNS / arm / f"fold{fold}-seed{seed}"


def fold_of(run: Path) -> int:
    """The held-out fold of a CV run directory (cv_run)."""
    return int(run.name.split("-")[0].removeprefix("fold"))


def mean_std(values) -> dict:
    """{"mean", "std"} of a sequence of numbers, as the reports store a figure over runs."""
    return {"mean": float(np.mean(values)), "std": float(np.std(values))}


def recipe_table(table: dict, runs: dict, columns: list, cell) -> str:
    """A markdown table, a row per recipe: `table[arm][column]` ({"mean", "std"}) formatted by `cell`."""
    lines = ["| recipe | runs | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for arm, row in table.items():
        lines.append(f"| {arm} | {runs[arm]} | " + " | ".join(cell(row[c]) if c in row else "–" for c in columns) + " |")
    return "\n".join(lines) + "\n"
