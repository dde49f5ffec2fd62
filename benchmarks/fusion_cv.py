"""The head's logits blended with the served embedding's prototypes, measured by cross-validation (issue 19).

    python benchmarks/fusion_cv.py ssl-acl-rc-acl-robust-oe-eq:0,1 ssl-acl-rc-acl-robust-oe-eq:2
        [--pretrained-share 0.6 [--pretrained runs/pretrain/NAME]] [--report fusion_cv]

The head ranks the built-in classes; the served embedding (the fine-tuned encoder joined with its
pre-trained one, `--pretrained-share` of the cosine) ranks them too, by cosine to each class's
prototype. On every CV run of each ARM:SEEDS group, each window's logits are blended with its prototype
logits on the head's scale (a·cos + b, the line the export fits for enrolled classes):

    fused = (1 − w)·logits + w·(a·cos(h, P) + b)        w = 0: the head (as served); w = 1: prototypes alone

(core.answer.class_logits with the prototype weight w, as the service computes it), with the prototypes and
the line from the run's training folds (clean clips, as the export makes them), and
each held-out clip ranked by the mean softmax of its windows with sound, under every recording condition.
Per group: accuracy per w (mean ± std over runs) and, for each w against w = 0, the paired difference over
the held-out clips with its p-value over source recordings (compare_cv.paired); then the same pooled over
every group but the first (the runs that did not choose w when the first group chose it).
The chosen w is the first group's best mean of the six columns (ties: the smaller); the JSON also holds the
figures at that w over every run of each arm. Per run results are kept in cv-fusion<S>[-NAME]-r<V>.json beside its
cv.json. Writes reports/REPORT.{json,md}.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from _data import (
    REPORTS,
    add_joint_arguments,
    encoder_tag,
    fold_of,
    group_runs_of,
    joint_arguments,
    machine,
    mean_std,
    training_clips,
)
from compare_cv import paired
from cv_study import ESC10, NOISE, ROOT, window_outputs

from core.activity import ActivityConfig
from core.answer import class_logits, softmax
from core.classes import ClassSet
from core.features import FrontendConfig
from core.openset import OpenSet
from export.open_set import fit_builtin
from training import robustness
from training.data import find_audio, scan_labeled
from training.robustness import CONDITIONS, condition_features
from training.run import load_inference_model

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0]


def clip_probs(windows: list[tuple[np.ndarray, np.ndarray]], open_set: OpenSet, w: float) -> np.ndarray:
    """Per clip its windows' (logits (N, C), embeddings (N, D)) -> (K, C) the clip probabilities the service
    ranks by with prototype weight w (core.answer.class_logits, the mean softmax of the windows)."""
    classes = ClassSet(replace(open_set, prototype_weight=w))
    return np.stack([softmax(class_logits(logits, h, classes)).mean(axis=0) for logits, h in windows])


def served_classes(model, run: Path, frontend, activity, prototype_weight: float = 0.0,
                   temperature: float = 1.0) -> ClassSet:
    """The built-in classes a CV run would be exported with: prototypes and the cosine-logit line from its
    training folds' clean clips (export.open_set.attach_open_set), no open set (threshold π)."""
    clips, names = scan_labeled(ESC10)
    index = {n: i for i, n in enumerate(names)}
    train = training_clips(clips, fold_of(run))
    features = condition_features([c.path for c in train], find_audio(NOISE), frontend, ROOT / "cache", ("clean",))
    windows = window_outputs(model, features["clean"], frontend, activity)  # served embeddings: unit length
    _, prototypes, line = fit_builtin(windows, np.array([index[c.label] for c in train]), len(names))
    return ClassSet(OpenSet(prototypes, names, np.pi, 0.0, "none", line, prototype_weight=prototype_weight,
                            temperature=temperature))


def measure_run(run: Path, share: float, pretrained: str | None, weights: list[float]) -> dict:
    """{"fold", "held", "line": (a, b), "correct": {w: {condition: [bool per held-out clip]}}} for one CV run."""
    model, info = load_inference_model(run, share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    classes = served_classes(model, run, frontend, activity)
    clips, names = scan_labeled(ESC10)
    index, fold = {n: i for i, n in enumerate(names)}, fold_of(run)
    held = [c for c in clips if c.fold == fold]
    labels = np.array([index[c.label] for c in held])
    correct = {str(w): {} for w in weights}
    for condition, features in condition_features([c.path for c in held], find_audio(NOISE), frontend,
                                                  ROOT / "cache").items():
        windows = window_outputs(model, features, frontend, activity)
        for w in weights:
            correct[str(w)][condition] = (clip_probs(windows, classes.builtin, w).argmax(axis=1) == labels).tolist()
    return {"fold": fold, "held": [c.path.name for c in held], "line": classes.builtin.cosine_logit, "correct": correct}


def group_runs(group: str, share: float, pretrained: str | None, weights: list[float]) -> dict[str, dict]:
    """{arm/run: measure_run(...)} for ARM:SEEDS (cached in each run's cv-fusion<S>[-NAME]-r<V>.json)."""
    arm, runs = group_runs_of(group)
    out = {}
    for run in runs:
        path = run / f"cv-fusion{share:g}{encoder_tag(pretrained)}-r{robustness.VERSION}.json"  # r: the conditions' code
        result = json.loads(path.read_text()) if path.exists() else None
        if result is None or any(str(w) not in result["correct"] for w in weights):
            result = measure_run(run, share, pretrained, weights)
            path.write_text(json.dumps(result))
            print(f"measured {run}", flush=True)
        out[f"{arm}/{run.name}"] = result
    return out


def clip_shares(runs: dict, w: float, condition: str) -> dict[str, float]:
    """{clip|arm: share of the arm's runs (seeds) answering it right}: a clip of each arm counted apart,
    named first so that compare_cv.source_of finds its source recording."""
    right, count = {}, {}
    for key, r in runs.items():
        arm = key.split("/")[0]
        for name, ok in zip(r["held"], r["correct"][str(w)][condition], strict=True):
            right[f"{name}|{arm}"] = right.get(f"{name}|{arm}", 0) + ok
            count[f"{name}|{arm}"] = count.get(f"{name}|{arm}", 0) + 1
    return {k: right[k] / count[k] for k in right}


def condition_stats(runs: dict, variant, baseline, vs_key: str, rng) -> dict:
    """{condition: {"mean", "std", vs_key: paired(variant, baseline) (None for the baseline itself)}} over
    these runs, whose r["correct"][str(variant)][condition] says per held-out clip whether it was right."""
    row = {}
    for condition in CONDITIONS:
        accuracy = [float(np.mean(r["correct"][str(variant)][condition])) for r in runs.values()]
        vs = (paired(clip_shares(runs, variant, condition), clip_shares(runs, baseline, condition), rng)
              if variant != baseline else None)
        row[condition] = {**mean_std(accuracy), vs_key: vs}
    return row


def condition_cells(row: dict, vs_key: str) -> list[str]:
    """A condition_stats row as markdown cells: "mean ± std (difference, p)" per condition, in %."""
    return [f"{100 * row[c]['mean']:.1f} ± {100 * row[c]['std']:.1f}"
            + (f" ({100 * row[c][vs_key]['difference']:+.1f}, p {row[c][vs_key]['p']:.2f})" if row[c][vs_key] else "")
            for c in CONDITIONS]


def condition_tables(tables: dict, variant: str, vs_key: str, summary: str, summary_header: str | None = None
                     ) -> list[str]:
    """{group: (runs, {variant: condition_stats row + its `summary`})} -> markdown lines: per group a
    table of the variants (rows) by the conditions (condition_cells), with the summary column last."""
    header = f"| {variant} | " + " | ".join(CONDITIONS) + f" | {summary_header or summary} |"
    lines = []
    for name, (n_runs, table) in tables.items():
        lines += [f"**{name}** ({n_runs} runs)", "", header, "|---|" + "---|" * (len(CONDITIONS) + 1)]
        for key, row in table.items():
            lines.append(f"| {key} | " + " | ".join(condition_cells(row, vs_key)) + f" | {100 * row[summary]:.2f} |")
        lines.append("")
    return lines


def summarise(runs: dict, weights: list[float], rng) -> dict:
    """{w: {condition: {"mean", "std", "vs_head": paired(w, 0)}}} over these runs."""
    table = {}
    for w in weights:
        row = condition_stats(runs, w, 0.0, "vs_head", rng)
        row["mean"] = float(np.mean([row[c]["mean"] for c in CONDITIONS]))  # of the six columns
        table[str(w)] = row
    return table


def markdown(tables: dict, share: float) -> str:
    lines = [f"Clip accuracy % with the head's logits blended with the served embedding's prototypes "
             f"(share {share}), {machine()}: mean ± std over runs; under it, the paired difference against "
             "w = 0 (p over source recordings).", ""]
    return "\n".join(lines + condition_tables(tables, "w", "vs_head", "mean"))


def choose(table: dict) -> float:
    """The w with the best mean of the six columns (ties: the smaller w)."""
    return max((float(w) for w in table), key=lambda w: (round(table[str(w)]["mean"], 6), -w))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", help="ARM:SEEDS (the first chooses w, the others confirm it)")
    add_joint_arguments(parser, "rank by the prototypes of the joint embedding, as the model is served")
    parser.add_argument("--weights", nargs="+", type=float, default=WEIGHTS)
    parser.add_argument("--report", default="fusion_cv", help="reports/REPORT.json and .md")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    weights = sorted({0.0, *args.weights})  # w = 0, the head alone, is what every other w is compared with
    rng = np.random.default_rng(0)
    groups = {g: group_runs(g, share, pretrained, weights) for g in args.groups}
    tables = {g: (len(runs), summarise(runs, weights, rng)) for g, runs in groups.items()}
    if len(groups) > 2:
        confirming = {k: v for g in args.groups[1:] for k, v in groups[g].items()}
        tables["pooled: " + " + ".join(args.groups[1:])] = (len(confirming), summarise(confirming, weights, rng))
    chosen = choose(tables[args.groups[0]][1])
    by_arm = {}  # every run of each arm, whichever group it came in
    for runs in groups.values():
        for key, r in runs.items():
            by_arm.setdefault(key.split("/")[0], {})[key] = r
    arms = {arm: {"runs": len(runs), **summarise(runs, [chosen], rng)[str(chosen)]} for arm, runs in by_arm.items()}
    REPORTS.mkdir(exist_ok=True)
    report = {"arm": args.groups[0].partition(":")[0], "pretrained_share": share, "pretrained": pretrained,
              "prototype_weight": chosen, "chosen_on": args.groups[0], "machine": machine(),
              "tables": {g: t for g, (_, t) in tables.items()}, "at_chosen_weight": arms}
    (REPORTS / f"{args.report}.json").write_text(json.dumps(report, indent=1) + "\n")
    text = markdown(tables, share) + f"\nChosen on {args.groups[0]} (best mean of the six columns): w = {chosen:g}.\n"
    for arm, row in arms.items():
        text += (f"At w = {chosen:g}, every run of {arm} ({row['runs']}): "
                 + ", ".join(f"{c} {100 * row[c]['mean']:.1f} ± {100 * row[c]['std']:.1f}" for c in CONDITIONS) + ".\n")
    (REPORTS / f"{args.report}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
