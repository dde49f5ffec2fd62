"""Are the scores probabilities? Calibration of the served ranking by cross-validation (issue 19).

    python benchmarks/calibration_cv.py ssl-acl-rc-acl-robust-oe-eq-soup:0+1 [--pretrained-share 0.6]
        [--weights 0 0.75]

On every CV run of the ARM:SEEDS group, each clean held-out clip is ranked as the service ranks it
(core.answer.class_logits at each prototype weight, the mean softmax of the windows with sound), and
its top score is set against whether that class is right: accuracy, mean top score, the negative
log-likelihood of the true class and the expected calibration error (ten equal-width bins of the top
score; 0 for calibrated scores). Writes reports/calibration_cv.{json,md}.
"""

import argparse
import json

import numpy as np
from _data import REPORTS, add_joint_arguments, cv_runs, fold_of, joint_arguments, machine
from cv_study import ESC10, NOISE, ROOT, window_outputs
from fusion_cv import clip_probs, served_classes

from core.activity import ActivityConfig
from core.features import FrontendConfig
from training.data import find_audio, scan_labeled
from training.robustness import condition_features
from training.run import load_inference_model


def clip_scores(run, share: float, pretrained: str | None, weights: list[float]) -> tuple[dict, np.ndarray]:
    """({w: (K, C) clip probabilities}, (K,) true classes) for one CV run's clean held-out clips."""
    model, info = load_inference_model(run, share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    classes = served_classes(model, run, frontend, activity)
    clips, names = scan_labeled(ESC10)
    held = [c for c in clips if c.fold == fold_of(run)]
    features = condition_features([c.path for c in held], find_audio(NOISE), frontend, ROOT / "cache", ("clean",))
    windows = window_outputs(model, features["clean"], frontend, activity)
    probs = {w: clip_probs(windows, classes.builtin, w) for w in weights}
    return probs, np.array([names.index(c.label) for c in held])


def calibration(probs: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict:
    """(K, C) probabilities and (K,) true classes -> accuracy, mean top score, NLL, ECE."""
    top, right = probs.max(axis=1), probs.argmax(axis=1) == truth
    edges = np.linspace(0, 1, bins + 1)
    ece = sum(abs(right[m].mean() - top[m].mean()) * m.mean()
              for m in ((top > lo) & (top <= hi) for lo, hi in zip(edges[:-1], edges[1:])) if m.any())
    return {"accuracy": float(right.mean()), "mean_top_score": float(top.mean()),
            "nll": float(-np.log(probs[np.arange(len(truth)), truth]).mean()), "ece": float(ece), "clips": len(truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("group", help="ARM:SEEDS, e.g. ssl-acl-rc-acl-robust-oe-eq-soup:0+1")
    parser.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.75])
    add_joint_arguments(parser, "served with the joint embedding")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    arm, _, seed = args.group.partition(":")
    runs = cv_runs(arm, seed or None)
    if not runs:
        raise SystemExit(f"{args.group}: no finished CV runs")
    per_run = [clip_scores(run, share, pretrained, args.weights) for run in runs]
    truth = np.concatenate([t for _, t in per_run])
    table = {str(w): calibration(np.concatenate([p[w] for p, _ in per_run]), truth) for w in args.weights}
    REPORTS.mkdir(exist_ok=True)
    report = {"group": args.group, "runs": len(runs), "pretrained_share": share, "machine": machine(), "table": table}
    (REPORTS / "calibration_cv.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"`{args.group}` ({len(runs)} runs, clean held-out clips, {machine()}):", "",
             "| prototype weight | accuracy | mean top score | NLL | ECE |", "|---|---|---|---|---|"]
    lines += [f"| {w} | {100 * r['accuracy']:.1f} % | {r['mean_top_score']:.3f} | {r['nll']:.3f} | {r['ece']:.3f} |"
              for w, r in table.items()]
    (REPORTS / "calibration_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
