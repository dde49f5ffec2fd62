"""Where a recipe's errors are: per-class accuracy and the confusion matrix over its CV runs (issue 19).

    python benchmarks/confusion_cv.py [--arms ssl-acl-acl-robust-oe-soup ...]

Each cross-validation run of benchmarks/cv_study.py (or soup_cv.py) classifies its held-out fold's
clean clips as the service ranks them (mean softmax over the windows with sound); the matrices of
an arm's runs are summed (every clip counted once per seed). Also the clips an arm gets wrong in
more than half of its runs, from the runs' cv.json. Writes reports/confusion_cv.json and
reports/confusion_cv.md (arms of an earlier report that are not measured now are kept).
"""

import argparse
import json
from pathlib import Path

import numpy as np
from _data import REPORTS, cv_runs, fold_of, require_data
from cv_study import clean_features, outputs

from core.activity import ActivityConfig
from core.features import FrontendConfig
from training.data import scan_labeled
from training.run import load_checkpoint


def confusion(arm: str, clips, names: list[str]) -> np.ndarray:
    """(C, C) counts, true class by row, the top-ranked class by column, over the arm's CV runs."""
    index = {n: i for i, n in enumerate(names)}
    matrix = np.zeros((len(names), len(names)), dtype=int)
    for run in cv_runs(arm):
        model, info = load_checkpoint(run)
        frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
        held = [c for c in clips if c.fold == fold_of(run)]
        probs, _ = outputs(model, clean_features([c.path for c in held], frontend), frontend, activity)  # (K, C)
        np.add.at(matrix, ([index[c.label] for c in held], probs.argmax(axis=1)), 1)
    return matrix


def hard_clips(arm: str, clips) -> dict[str, float]:
    """{file name: share of the arm's runs that answered it right}, for the clips wrong in most runs."""
    right: dict[str, list[bool]] = {}
    for run in cv_runs(arm):
        held = [c for c in clips if c.fold == fold_of(run)]
        correct = json.loads((run / "cv.json").read_text())["conditions"]["clean"]["correct"]
        for clip, ok in zip(held, correct):
            right.setdefault(Path(clip.path).name, []).append(ok)
    return {name: float(np.mean(oks)) for name, oks in sorted(right.items()) if np.mean(oks) < 0.5}


def markdown(report: dict, names: list[str]) -> str:
    short = [n.replace("_", " ") for n in names]
    lines = ["Per-class accuracy on held-out clean clips (all runs of each arm):", "",
             "| recipe | runs | " + " | ".join(short) + " |", "|---|---|" + "---|" * len(names)]
    for arm, r in report.items():
        m = np.array(r["confusion"])
        lines.append(f"| {arm} | {r['runs']} | " + " | ".join(f"{a:.0%}" for a in m.diagonal() / m.sum(axis=1)) + " |")
    lines += ["", "Clips wrong in most runs (ESC-50 names: fold-source-take-class; a source is one recording):", ""]
    by_class = lambda name: (name.split("-")[-1], name)  # noqa: E731 - the ESC-50 target number ends the name
    lines += [f"- `{arm}`: " + ", ".join(sorted(r["hard_clips"], key=by_class)) for arm, r in report.items()
              if "hard_clips" in r]
    for arm, r in report.items():
        lines += ["", f"`{arm}`: true class by row, answered class by column.", "",
                  "| | " + " | ".join(short) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {short[i]} | " + " | ".join(str(v) for v in row) + " |" for i, row in enumerate(r["confusion"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=["ssl-acl-acl-robust-oe", "ssl-acl-acl-robust-oe-soup"])
    args = parser.parse_args()
    clips, names = scan_labeled(require_data("esc10"))
    path = REPORTS / "confusion_cv.json"
    report = json.loads(path.read_text())["arms"] if path.exists() else {}
    for arm in args.arms:
        if runs := cv_runs(arm):
            report[arm] = {"runs": len(runs), "confusion": confusion(arm, clips, names).tolist(),
                           "hard_clips": hard_clips(arm, clips)}
    REPORTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"labels": names, "arms": report}, indent=1) + "\n")
    text = markdown(report, names)
    (REPORTS / "confusion_cv.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
