"""The open-set threshold by cross-validation (issue 20), from the runs of benchmarks/cv_study.py.

    python benchmarks/openset_cv.py --arm ce-robust

Known: every held-out clip of every CV run (its angle to the nearest class prototype of the
run's own training folds). Unknown: the game sound effects of unlabeled/ (never in training), by
the same runs. For false-rejection rates of 1-20 %: the threshold (a quantile of the pooled known
angles), the unknown clips accepted, the known clips rejected under each recording condition, and
the answered-label accuracy (the right class and not rejected, as core.answer answers). Operating
point (stated before the results): the largest of those FRRs whose answered-label accuracy on clean
clips stays within 2 points of the top-1 accuracy. Writes reports/openset_cv.json (what
`soundarc export --calibration` reads) and reports/openset_cv.md.
"""

import argparse
import json
import sys

import numpy as np
from _data import REPORTS, cv_runs

from core.openset import auroc

FRRS = (0.01, 0.02, 0.05, 0.1, 0.2)
MAX_LOSS = 0.02  # answered-label accuracy may fall this far below top-1 accuracy


def load_runs(arm: str) -> list[dict]:
    runs = [json.loads((run / "cv.json").read_text()) for run in cv_runs(arm)]
    if not runs:
        sys.exit(f"no finished runs in runs/cv/{arm}: run benchmarks/cv_study.py first")
    return runs


def evaluate(runs: list[dict], frr: float) -> dict:
    conditions = runs[0]["conditions"]
    known = np.concatenate([r["conditions"]["clean"]["angles"] for r in runs])
    unknown = np.concatenate([r["unknown_angles"] for r in runs])
    threshold = float(np.quantile(known, 1 - frr))
    row = {"frr": frr, "threshold_rad": threshold, "unknown_accepted": float((unknown <= threshold).mean()),
           "rejected": {}, "top1": {}, "answered": {}}
    for condition in conditions:
        angles = np.concatenate([r["conditions"][condition]["angles"] for r in runs])
        correct = np.concatenate([r["conditions"][condition]["correct"] for r in runs])
        row["rejected"][condition] = float((angles > threshold).mean())
        row["top1"][condition] = float(correct.mean())
        row["answered"][condition] = float((correct & (angles <= threshold)).mean())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", required=True)
    args = parser.parse_args()
    runs = load_runs(args.arm)
    known = np.concatenate([r["conditions"]["clean"]["angles"] for r in runs])
    unknown = np.concatenate([r["unknown_angles"] for r in runs])
    table = [evaluate(runs, frr) for frr in FRRS]
    fitting = [r for r in table if r["top1"]["clean"] - r["answered"]["clean"] <= MAX_LOSS]
    chosen = max(fitting, key=lambda r: r["frr"]) if fitting else table[0]
    report = {"arm": args.arm, "runs": [r["run"] for r in runs], "known_clips": len(known), "unknown_clips": len(unknown),
              "auroc": auroc(known, unknown), "table": table, "threshold_rad": chosen["threshold_rad"],
              "frr": chosen["frr"],
              "calibrated_on": f"4-fold cross-validation of recipe {args.arm} ({len(runs)} runs: held-out folds vs "
                               f"unlabeled/), operating point FRR {chosen['frr']:.0%}"}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "openset_cv.json").write_text(json.dumps(report, indent=1))
    conditions = list(runs[0]["conditions"])
    lines = [f"Recipe `{args.arm}`, {len(runs)} CV runs, {len(known)} known clips, {len(unknown)} unknown clips; "
             f"AUROC {report['auroc']:.3f}.", "",
             "| FRR | threshold | unknown accepted | rejected: " + " / ".join(conditions) + " | top-1 clean | answered clean |",
             "|---|---|---|---|---|---|"]
    for r in table:
        mark = " (chosen)" if r is chosen else ""
        lines.append(f"| {r['frr']:.0%}{mark} | {r['threshold_rad']:.3f} rad ({np.degrees(r['threshold_rad']):.1f}°) | "
                     f"{r['unknown_accepted']:.1%} | " + " / ".join(f"{r['rejected'][c]:.1%}" for c in conditions) +
                     f" | {r['top1']['clean']:.1%} | {r['answered']['clean']:.1%} |")
    (REPORTS / "openset_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
