"""Are the scores probabilities? A temperature for the served scores, by cross-validation (issue 19).

    python benchmarks/calibration_cv.py ssl-acl-rc-acl-robust-oe-eq-soup:0+1 --pretrained-share 0.6
        --prototype-weight 0.75 [--vote amplitude]

On every CV run of the ARM:SEEDS group, each held-out clip, clean and under the five recording
conditions, is scored as the service scores it (core.answer: class_logits at the prototype weight,
the mean softmax of the windows with sound, sharpened by a temperature T: p^(1/T) renormalised, which
changes no order), and its top score is set against whether that class is right: accuracy, mean top
score, the negative log-likelihood of the true class and the expected calibration error (ten
equal-width bins of the top score; 0 for calibrated scores). T is fitted (least NLL over a geometric
grid, the six conditions pooled with equal weight) on the runs of three folds and measured on the
fourth's, each fold in turn; the temperature fitted on all four folds is adopted iff, so measured, NLL and ECE
are both lower than at T = 1, pooled and on clean clips alone, and clean accuracy moves by less than
0.5 points (it cannot: T changes no order; the rule of BENCHMARKS.md, stated before its results).
`--vote amplitude`: the clips' scores are their windows' probabilities weighted by amplitude
(core.answer.vote_weights), read from the window caches of benchmarks/vote_cv.py (run it first, at the
same share and prototype weight).
Writes reports/calibration_cv.{json,md}.
"""

import argparse
import json

import numpy as np
from _data import REPORTS, add_joint_arguments, cv_runs, fold_of, joint_arguments, machine
from cv_study import CONDITIONS, ESC10, NOISE, ROOT, window_outputs
from fusion_cv import clip_probs, served_classes
from vote_cv import held_out, vote, window_cache

from core.activity import ActivityConfig
from core.answer import sharpen
from core.features import FrontendConfig
from core.openset import VOTES
from training.data import find_audio, scan_labeled
from training.robustness import condition_features
from training.run import load_inference_model

GRID = np.round(0.05 * 1.05 ** np.arange(85), 4)  # 0.05 .. 3.0, short enough to write and read back
MAX_ACCURACY_MOVE = 0.005


def served_probs(run, share: float, pretrained: str | None, weight: float) -> tuple[dict, np.ndarray]:
    """({condition: (K, C) the held-out clips' scores at T = 1}, (K,) true classes) for one CV run."""
    model, info = load_inference_model(run, share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    builtin = served_classes(model, run, frontend, activity).builtin
    clips, names = scan_labeled(ESC10)
    held = [c for c in clips if c.fold == fold_of(run)]
    features = condition_features([c.path for c in held], find_audio(NOISE), frontend, ROOT / "cache")
    probs = {condition: clip_probs(window_outputs(model, f, frontend, activity), builtin, weight)
             for condition, f in features.items()}
    return probs, np.array([names.index(c.label) for c in held])


def voted_probs(run, share: float, pretrained: str | None, weight: float, how: str) -> tuple[dict, np.ndarray]:
    """served_probs, each clip's scores its windows' vote `how`, from vote_cv.py's cache of the run."""
    path = window_cache(run, share, pretrained, weight)
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/vote_cv.py on this group first")
    _, truth = held_out(run)
    with np.load(path) as windows:  # the mean and amplitude votes need no noise floor
        probs = {c: np.stack([vote(windows[f"{c}/{i}/log_p"], windows[f"{c}/{i}/power"], np.nan, how)
                              for i in range(len(truth))]) for c in CONDITIONS}
    return probs, truth


def calibration(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict:
    """(K, C) probabilities and (K,) true classes -> accuracy, mean top score, NLL, ECE."""
    top, right = probs.max(axis=1), probs.argmax(axis=1) == truth
    edges = np.linspace(0, 1, bins + 1)
    ece = sum(abs(right[m].mean() - top[m].mean()) * m.mean()
              for m in ((top > lo) & (top <= hi) for lo, hi in zip(edges[:-1], edges[1:])) if m.any())
    return {"accuracy": float(right.mean()), "mean_top_score": float(top.mean()),
            "nll": float(-np.log(probs[np.arange(len(truth)), truth] + 1e-12).mean()), "ece": float(ece),
            "clips": len(truth)}


def fit(runs: list[tuple[dict, np.ndarray]]) -> float:
    """The grid temperature of least NLL over these runs' clips, every condition pooled."""
    def nll(t: float) -> float:
        return np.mean([calibration(sharpen(probs[c], t), truth)["nll"] for probs, truth in runs for c in CONDITIONS])
    return float(min(GRID, key=nll))


def measure(runs: list[tuple[dict, np.ndarray]], temperatures: list[float]) -> dict:
    """{condition or "pooled": calibration(...)} of every run's clips, run i at temperatures[i]."""
    probs = {c: np.concatenate([sharpen(p[c], t) for (p, _), t in zip(runs, temperatures)]) for c in CONDITIONS}
    truth = np.concatenate([t for _, t in runs])
    table = {c: calibration(probs[c], truth) for c in CONDITIONS}
    table["pooled"] = calibration(np.concatenate(list(probs.values())), np.tile(truth, len(CONDITIONS)))
    return table


def adopt(at_one: dict, held_out: dict) -> bool:
    """The rule: left one fold out, NLL and ECE lower pooled and on clean, clean accuracy within 0.5 points."""
    better = all(held_out[c][m] < at_one[c][m] for c in ("pooled", "clean") for m in ("nll", "ece"))
    return better and abs(held_out["clean"]["accuracy"] - at_one["clean"]["accuracy"]) < MAX_ACCURACY_MOVE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", help="ARM:SEEDS, e.g. ssl-acl-rc-acl-robust-oe-eq-soup:0+1")
    parser.add_argument("--prototype-weight", type=float, default=0.0, help="the served prototype weight")
    parser.add_argument("--vote", choices=VOTES, default="mean", help="how a clip's windows vote")
    add_joint_arguments(parser, "served with the joint embedding")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    arm, _, seed = args.group.partition(":")
    paths = cv_runs(arm, seed or None)
    folds = [fold_of(p) for p in paths]
    if len(set(folds)) < 2:
        raise SystemExit(f"{args.group}: finished CV runs of fewer than two folds")
    runs = [served_probs(run, share, pretrained, args.prototype_weight) if args.vote == "mean" else
            voted_probs(run, share, pretrained, args.prototype_weight, args.vote) for run in paths]
    # each run's T from the runs of the other folds (another seed's run of its fold has seen its clips' labels)
    held_out_t = [fit([r for r, f in zip(runs, folds) if f != fold]) for fold in folds]
    temperature = fit(runs)
    tables = {"at_one": measure(runs, [1.0] * len(runs)), "held_out": measure(runs, held_out_t),
              "in_sample": measure(runs, [temperature] * len(runs))}
    adopted = adopt(tables["at_one"], tables["held_out"])
    REPORTS.mkdir(exist_ok=True)
    report = {"arm": arm, "group": args.group, "runs": [p.name for p in paths], "pretrained_share": share,
              "pretrained": pretrained, "prototype_weight": args.prototype_weight, "vote": args.vote, "machine": machine(),
              "fitted_temperature": temperature, "held_out_temperatures": held_out_t, "adopted": adopted,
              "temperature": temperature if adopted else 1.0, "tables": tables}
    (REPORTS / "calibration_cv.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"`{args.group}` ({len(paths)} runs, prototype weight {args.prototype_weight:g}, share {share:g}, "
             f"{args.vote} vote; "
             f"held-out clips, clean and five recording conditions; {machine()}). Temperatures fitted on the other "
             f"folds: {', '.join(f'{t:g}' for t in held_out_t)}; on all folds {temperature:g}: "
             + ("adopted." if adopted else "not adopted (the rule: BENCHMARKS.md)."), "",
             "| scores | clips | accuracy | mean top score | NLL | ECE |", "|---|---|---|---|---|---|"]
    names = {"at_one": "T = 1", "held_out": "T fitted on the other folds", "in_sample": f"T = {temperature:g}, all folds"}
    for key, table in tables.items():
        name = names[key]
        for clips in ("pooled", "clean", *[c for c in CONDITIONS if c != "clean"]):
            r = table[clips]
            lines.append(f"| {name} | {clips} | {100 * r['accuracy']:.1f} % | {r['mean_top_score']:.3f} | "
                         f"{r['nll']:.3f} | {r['ece']:.3f} |")
    (REPORTS / "calibration_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
