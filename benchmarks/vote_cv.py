"""How a clip's windows vote, measured by cross-validation (issue 19).

    python benchmarks/vote_cv.py ssl-acl-rc-acl-robust-oe-eq:0,1 [more ARM:SEEDS[@HOP] groups]
        --pretrained-share 0.6 --prototype-weight 0.5 [--report vote_cv]

On every CV run of each group, each held-out clip is answered as served (its windows with sound, the
head's logits blended with the served embedding's prototypes at the prototype weight: fusion_cv.py),
under every recording condition, by three votes over its windows' probabilities p (N, C):

    mean        the mean of p (as served)
    log         the mean of log p (the windows' product; the same order at any temperature)
    loudness    the mean of p weighted by each window's mean power, 10^(level/10) over its frames
                (core.activity's frame levels)
    amplitude   the mean of p weighted by the square root of that power
    signal      the mean of p weighted by each window's estimated share of signal, max(0, 1 - N / power),
                N the clip's noise floor: the 10th percentile of its frames' powers (a clean clip's
                floor is far below its windows, so its weights are all near 1: the mean)

Per group and pooled over every group but the first: accuracy per vote (mean ± std over runs) and its
paired difference against `mean` over the held-out clips (p over source recordings: compare_cv.paired).
With `--versus`, also two recipes answered alike: the first group against the second, clip by clip, at
each vote (e.g. ARM-B:0 against ARM-A:0, the same folds and seed).
The rule that reads it is in BENCHMARKS.md ("How a clip's windows vote"). Per run results are kept in
cv-vote<S>-w<W>[-NAME][-hopH]-r<V>.npz beside its cv.json (V: training.robustness.VERSION): each held-out
clip's window log-probabilities and powers and its noise floor under each condition, from which every vote
is counted (a cache without floors is measured again). Writes reports/REPORT.{json,md}.
"""

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from _data import REPORTS, add_joint_arguments, encoder_tag, fold_of, group_runs_of, joint_arguments, machine
from compare_cv import paired
from cv_study import ESC10, NOISE, ROOT
from fusion_cv import clip_shares, condition_stats, condition_tables, served_classes

from core.activity import ActivityConfig, frame_levels, voting_windows, window_activity_of, window_power
from core.answer import class_logits
from core.features import FrontendConfig, patch_starts, patches
from training import robustness
from training.data import find_audio, scan_labeled
from training.robustness import CONDITIONS, condition_features
from training.run import load_inference_model

VOTES = ("mean", "log", "loudness", "amplitude", "signal")
FLOOR_PERCENTILE = 10  # the share of a clip's frames taken to be no quieter than its noise


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def vote(log_p: np.ndarray, power: np.ndarray, floor: float, how: str) -> np.ndarray:
    """(N, C) the windows' log-probabilities, (N,) their powers, the clip's noise floor power -> (C,)
    the clip's scores by `how`."""
    if how == "log":
        return log_p.mean(axis=0)
    weights = {"mean": np.ones(len(power)), "loudness": power, "amplitude": np.sqrt(power),
               "signal": np.maximum(0.0, 1.0 - floor / power)}[how]
    if weights.sum() == 0:  # no window above the floor: the mean
        weights = np.ones(len(power))
    return weights / weights.sum() @ np.exp(log_p)


@torch.no_grad()
def clip_windows(model, logmel: np.ndarray, gains: np.ndarray, frontend, activity, classes
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """One clip -> (N, C) the served log-probabilities and (N,) the mean power of its windows with sound
    (every window when none has sound), as cv_study.window_outputs keeps them, and the clip's noise
    floor power."""
    logits, h = (t.numpy() for t in model(torch.from_numpy(patches(logmel, frontend)[0])[:, None]))
    levels = frame_levels(logmel, frontend, gains)  # (F,) dB
    starts = patch_starts(max(len(logmel), frontend.patch_frames), frontend)
    power = window_power(levels, starts, frontend)  # (N,): what core.answer.vote_weights weighs by
    keep = voting_windows(window_activity_of(logmel, frontend, activity, gains))
    floor = float(np.percentile(10.0 ** (levels / 10.0), FLOOR_PERCENTILE))
    return log_softmax(class_logits(logits[keep], h[keep], classes)), power[keep], floor


def held_out(run: Path) -> tuple[list, np.ndarray]:
    """The run's held-out clips and (n,) their class indices."""
    clips, names = scan_labeled(ESC10)
    index = {n: i for i, n in enumerate(names)}
    held = [c for c in clips if c.fold == fold_of(run)]
    return held, np.array([index[c.label] for c in held])


def measure_run(run: Path, share: float, pretrained: str | None, weight: float, hop: int | None = None
                ) -> dict[str, np.ndarray]:
    """{"CONDITION/i/log_p": (N, C), "CONDITION/i/power": (N,), "CONDITION/i/floor": ()} for held-out
    clip i of one CV run (its windows every `hop` frames, else every eval_hop_frames of its front-end)."""
    model, info = load_inference_model(run, share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    frontend = dataclasses.replace(frontend, eval_hop_frames=hop) if hop else frontend
    classes = served_classes(model, run, frontend, activity, prototype_weight=weight)
    held, _ = held_out(run)
    out = {}
    for condition, features in condition_features([c.path for c in held], find_audio(NOISE), frontend,
                                                  ROOT / "cache").items():
        for i, (logmel, gains) in enumerate(features):
            key = f"{condition}/{i}"
            out[f"{key}/log_p"], out[f"{key}/power"], out[f"{key}/floor"] = clip_windows(
                model, logmel, gains, frontend, activity, classes)
    return out


def count_votes(run: Path, windows) -> dict:
    """{"fold", "held", "correct": {vote: {condition: [bool per held-out clip]}}} from a run's windows."""
    held, labels = held_out(run)
    correct = {how: {c: [bool(vote(*(windows[f"{c}/{i}/{k}"] for k in ("log_p", "power", "floor")), how).argmax()
                              == label) for i, label in enumerate(labels)] for c in CONDITIONS} for how in VOTES}
    return {"fold": fold_of(run), "held": [c.path.name for c in held], "correct": correct}


def group_runs(group: str, share: float, pretrained: str | None, weight: float) -> dict[str, dict]:
    """{arm/run: count_votes(...)} for ARM:SEEDS[@HOP] (the windows cached beside each run's cv.json; HOP:
    a window every HOP frames instead of the run's own eval_hop_frames)."""
    group, _, hop = group.partition("@")
    arm, runs = group_runs_of(group)
    hop = int(hop) if hop else None
    out = {}
    for run in runs:
        with np.load(cached_windows(run, share, pretrained, weight, hop)) as windows:
            out[f"{arm}/{run.name}"] = count_votes(run, windows)
    return out


def cached_windows(run: Path, share: float, pretrained: str | None, weight: float, hop: int | None = None) -> Path:
    """The run's window cache (measure_run), measured first where it is missing or lacks the noise floors."""
    path = window_cache(run, share, pretrained, weight, hop)
    if not has_floors(path):
        np.savez_compressed(path, **measure_run(run, share, pretrained, weight, hop))
        print(f"measured {run}", flush=True)
    return path


def window_cache(run: Path, share: float, pretrained: str | None, weight: float, hop: int | None = None) -> Path:
    """Where a run's served window outputs are kept (measure_run), for this script and calibration_cv.py."""
    tag = f"{encoder_tag(pretrained)}{f'-hop{hop}' if hop else ''}-r{robustness.VERSION}"  # r: the conditions' code
    return run / f"cv-vote{share:g}-w{weight:g}{tag}.npz"


def has_floors(path: Path) -> bool:
    """Whether a run's window cache exists and holds the clips' noise floors (older ones do not)."""
    if not path.exists():
        return False
    with np.load(path) as windows:
        return "clean/0/floor" in windows


def summarise(runs: dict, rng) -> dict:
    """{vote: {condition: {"mean", "std", "vs_mean": paired(vote, mean)}, "conditions": mean of the five}}."""
    table = {}
    for how in VOTES:
        row = condition_stats(runs, how, "mean", "vs_mean", rng)
        row["conditions"] = float(np.mean([row[c]["mean"] for c in CONDITIONS if c != "clean"]))
        table[how] = row
    return table


def versus(a: dict, b: dict, rng) -> dict:
    """{vote: {condition: paired(A, B)}, "conditions": A − B on the mean of the five}: two groups of runs
    of different recipes, each clip's share of right answers in A against its share in B."""
    def shares(runs, how, condition):  # {clip: share}, the arm's name dropped so that A and B pair up
        return {k.split("|")[0]: v for k, v in clip_shares(runs, how, condition).items()}

    table = {}
    for how in VOTES:
        row = {c: paired(shares(a, how, c), shares(b, how, c), rng) for c in CONDITIONS}
        row["conditions"] = float(np.mean([row[c]["difference"] for c in CONDITIONS if c != "clean"]))
        table[how] = row
    return table


def versus_markdown(table: dict, a: str, b: str) -> list[str]:
    lines = ["", f"{a} − {b}, clip by clip (points; p over source recordings):", "",
             "| vote | " + " | ".join(CONDITIONS) + " | five conditions |", "|---" * (len(CONDITIONS) + 2) + "|"]
    for how, row in table.items():
        cells = [f"{100 * row[c]['difference']:+.1f} (p {row[c]['p']:.2f})" for c in CONDITIONS]
        lines.append(f"| {how} | " + " | ".join(cells) + f" | {100 * row['conditions']:+.2f} |")
    return lines


def markdown(tables: dict, share: float, weight: float) -> str:
    lines = [f"Clip accuracy % by how the windows vote (served: share {share}, prototype weight {weight}), "
             f"{machine()}: mean ± std over runs; beside it, the paired difference against `mean` (p over "
             "source recordings).", ""]
    return "\n".join(lines + condition_tables(tables, "vote", "vs_mean", "conditions", "five conditions"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", help="ARM:SEEDS (the first decides, the others pooled confirm)")
    add_joint_arguments(parser, "answer with the joint embedding, as the model is served")
    parser.add_argument("--prototype-weight", type=float, required=True,
                        help="the served model's (openset.json; fusion_cv.py chooses it)")
    parser.add_argument("--report", default="vote_cv", help="reports/REPORT.json and .md")
    parser.add_argument("--versus", action="store_true", help="the first group against the second, clip by clip")
    args = parser.parse_args()
    if args.versus and len(args.groups) != 2:
        parser.error("--versus compares two groups")
    share, pretrained = joint_arguments(parser, args)
    rng = np.random.default_rng(0)
    groups = {g: group_runs(g, share, pretrained, args.prototype_weight) for g in args.groups}
    tables = {g: (len(runs), summarise(runs, rng)) for g, runs in groups.items()}
    if len(groups) > 1:
        confirming = {k: v for g in args.groups[1:] for k, v in groups[g].items()}
        tables["pooled: " + " + ".join(args.groups[1:])] = (len(confirming), summarise(confirming, rng))
    REPORTS.mkdir(exist_ok=True)
    report = {"pretrained_share": share, "pretrained": pretrained, "prototype_weight": args.prototype_weight,
              "machine": machine(), "tables": {g: t for g, (_, t) in tables.items()}}
    text = markdown(tables, share, args.prototype_weight)
    if args.versus:
        report["versus"] = versus(*(groups[g] for g in args.groups), rng)
        text += "\n".join(versus_markdown(report["versus"], *args.groups)) + "\n"
    (REPORTS / f"{args.report}.json").write_text(json.dumps(report, indent=1) + "\n")
    (REPORTS / f"{args.report}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
