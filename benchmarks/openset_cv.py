"""The open-set threshold by cross-validation (issue 20), from the runs of benchmarks/cv_study.py.

    python benchmarks/openset_cv.py --arm ce-robust [--pretrained-share S [--pretrained RUN]] [--report openset_cv]
        [--per-class]

Known: every held-out clip of every CV run (its angle to the nearest class prototype of the
run's own training folds), clean and under each recording condition of the robustness table.
Unknown: the game sound effects of unlabeled/ (never in training), by the same runs. For
false-rejection rates of 1-20 %: the threshold (a quantile of the known angles pooled over all
recording conditions: the server meets band-limited, noisy and re-encoded recordings, not only clean
ones), the unknown clips accepted, the known clips rejected under each condition, and the
answered-label accuracy (the right class and not rejected, as core.answer answers). Operating point:
the largest of those FRRs whose answered-label accuracy, pooled over the conditions, stays within 2
points of the top-1 accuracy. A second table calibrates on clean clips alone (the rule until the
outlier-exposure recipe, whose degraded known clips lie further out; BENCHMARKS.md). With
--pretrained-share, the angles of the joint embedding (cv-share<S>[-NAME].json of cv_study.py). Writes
reports/openset_cv.json (what `soundarc export --calibration` reads) and reports/openset_cv.md
(--report NAME: reports/NAME.*). With --per-class, beside it a threshold per class (the known angles nearest to
each class), fitted on half the seeds and measured on the other half (BENCHMARKS.md "An unknown angle per class").
"""

import argparse
import json
import sys

import numpy as np
from _data import REPORTS, add_joint_arguments, cv_result, cv_runs, joint_arguments

from core.openset import auroc

FRRS = (0.01, 0.02, 0.05, 0.1, 0.2)
MAX_LOSS = 0.02  # answered-label accuracy may fall this far below top-1 accuracy


def load_runs(arm: str, pretrained_share: float = 0.0, pretrained: str | None = None) -> list[dict]:
    files = [cv_result(run, pretrained_share, pretrained) for run in cv_runs(arm)]
    if not files or not all(f.exists() for f in files):
        sys.exit(f"runs/cv/{arm} lacks runs or their {files[0].name if files else 'cv.json'}: run benchmarks/cv_study.py "
                 f"--arms {arm}" + (f" --pretrained-share {pretrained_share:g}" if pretrained_share else "")
                 + (f" --pretrained {pretrained}" if pretrained else "") + " first")
    return [json.loads(f.read_text()) for f in files]


def known_angles(runs: list[dict], conditions: list[str]) -> np.ndarray:
    """The held-out clips' angles to their nearest prototype under `conditions`, pooled: (runs x clips x conditions,)."""
    return np.concatenate([r["conditions"][c]["angles"] for r in runs for c in conditions])


def evaluate(runs: list[dict], frr: float, calibration: list[str]) -> dict:
    """Threshold at `frr` of the known angles under the `calibration` conditions; its effect under every condition."""
    threshold = float(np.quantile(known_angles(runs, calibration), 1 - frr))
    unknown = np.concatenate([r["unknown_angles"] for r in runs])
    row = {"frr": frr, "threshold_rad": threshold, "unknown_accepted": float((unknown <= threshold).mean()),
           "rejected": {}, "top1": {}, "answered": {}}
    for condition in runs[0]["conditions"]:
        angles = known_angles(runs, [condition])
        correct = np.concatenate([r["conditions"][condition]["correct"] for r in runs])
        row["rejected"][condition] = float((angles > threshold).mean())
        row["top1"][condition] = float(correct.mean())
        row["answered"][condition] = float((correct & (angles <= threshold)).mean())
    row["answer_loss"] = float(np.mean([row["top1"][c] - row["answered"][c] for c in row["top1"]]))
    return row


def known_nearest(runs: list[dict], conditions: list[str]) -> np.ndarray:
    """The class each of known_angles(runs, conditions) is to (cv_study.py keeps it since 2026-12-07)."""
    return np.concatenate([r["conditions"][c]["nearest"] for r in runs for c in conditions])


def quantile_per_class(angles: np.ndarray, nearest: np.ndarray, q: float, n_classes: int) -> np.ndarray:
    """(K,) per class the q-quantile of the angles nearest to it (of all the angles where none is)."""
    one = np.quantile(angles, q)
    return np.array([np.quantile(angles[nearest == k], q) if (nearest == k).any() else one for k in range(n_classes)])


def class_thresholds(runs: list[dict], frr: float, conditions: list[str]) -> np.ndarray:
    """(K,) per class, the (1 - frr) quantile of the known angles nearest to it (the one threshold where none is)."""
    return quantile_per_class(known_angles(runs, conditions), known_nearest(runs, conditions), 1 - frr,
                              len(runs[0]["labels"]))


def per_class_row(fit: list[dict], test: list[dict], frr: float, conditions: list[str]) -> dict:
    """Thresholds per class fitted on `fit`, and one threshold beside them, measured on `test` (pooled)."""
    thresholds = {"one": np.full(len(fit[0]["labels"]), np.quantile(known_angles(fit, conditions), 1 - frr)),
                  "per class": class_thresholds(fit, frr, conditions)}
    angles, nearest = known_angles(test, conditions), known_nearest(test, conditions)
    correct = np.concatenate([r["conditions"][c]["correct"] for r in test for c in conditions])
    unknown = np.concatenate([r["unknown_angles"] for r in test])
    unknown_nearest = np.concatenate([r["unknown_nearest"] for r in test])
    row = {"frr": frr}
    for name, t in thresholds.items():
        row[name] = {"unknown_accepted": float((unknown <= t[unknown_nearest]).mean()),
                     "rejected": float((angles > t[nearest]).mean()),
                     "answered": float((correct & (angles <= t[nearest])).mean())}
    return row


def per_class(runs: list[dict], conditions: list[str]) -> dict:
    """In sample and 2-fold over seeds (fitted on every other seed, 0, 2, ..., or ensemble 0+1, ..., measured on
    the others, and the other way round)."""
    if not all("unknown_nearest" in r for r in runs):
        sys.exit("the runs' scores lack each clip's nearest class: cv_study.py --rescore (with the same --pretrained-share)")
    halves = seed_halves(runs)
    two_fold = []
    for frr in FRRS if all(halves) else ():  # one seed: in sample only
        a, b = (per_class_row(fit, test, frr, conditions) for fit, test in (halves, halves[::-1]))
        two_fold.append({"frr": frr, **{name: {k: (a[name][k] + b[name][k]) / 2 for k in a[name]}
                                        for name in ("one", "per class")}})
    return {"in_sample": [per_class_row(runs, runs, frr, conditions) for frr in FRRS], "two_fold": two_fold,
            "thresholds_rad": {f"{frr:g}": class_thresholds(runs, frr, conditions).tolist() for frr in FRRS},
            "labels": runs[0]["labels"]}


def seed_halves(runs: list[dict]) -> list[list[dict]]:
    """The runs of every other seed (0, 2, ..., or ensemble 0+1, ...) and those of the others (none for one seed)."""
    seeds = sorted({seed_of(r) for r in runs})
    return [[r for r in runs if seeds.index(seed_of(r)) % 2 == half] for half in (0, 1)]


def seed_of(run: dict) -> str:
    """"fold1-seed2" -> "2"; an ensemble's "fold1-seed0+1" -> "0+1"."""
    return run["run"].rpartition("seed")[2]


def per_class_markdown(table: list[dict]) -> list[str]:
    lines = ["| FRR | unknown accepted: one / per class | known rejected: one / per class | answered: one / per class |",
             "|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['frr']:.0%} | " + " | ".join(f"{r['one'][k]:.1%} / {r['per class'][k]:.1%}"
                                                          for k in ("unknown_accepted", "rejected", "answered")) + " |")
    return lines


def markdown(table: list[dict], chosen: dict | None, conditions: list[str]) -> list[str]:
    lines = ["| FRR | threshold | unknown accepted | rejected: " + " / ".join(conditions) +
             " | answered: " + " / ".join(conditions) + " |", "|---|---|---|---|---|"]
    for r in table:
        mark = " (chosen)" if r is chosen else ""
        lines.append(f"| {r['frr']:.0%}{mark} | {r['threshold_rad']:.3f} rad ({np.degrees(r['threshold_rad']):.1f}°) | "
                     f"{r['unknown_accepted']:.1%} | " + " / ".join(f"{r['rejected'][c]:.1%}" for c in conditions) +
                     " | " + " / ".join(f"{r['answered'][c]:.1%}" for c in conditions) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", required=True)
    add_joint_arguments(parser, "the joint embedding's angles (cv_study.py --pretrained-share)")
    parser.add_argument("--report", default="openset_cv", help="reports/REPORT.json and .md")
    parser.add_argument("--per-class", action="store_true", help="also a threshold per nearest class, against the one")
    args = parser.parse_args()
    runs = load_runs(args.arm, *joint_arguments(parser, args))
    conditions = list(runs[0]["conditions"])
    known = known_angles(runs, ["clean"])
    unknown = np.concatenate([r["unknown_angles"] for r in runs])
    table = [evaluate(runs, frr, conditions) for frr in FRRS]
    clean_table = [evaluate(runs, frr, ["clean"]) for frr in FRRS]
    fitting = [r for r in table if r["answer_loss"] <= MAX_LOSS]
    chosen = max(fitting, key=lambda r: r["frr"]) if fitting else table[0]
    report = {"arm": args.arm, "pretrained_share": args.pretrained_share, "pretrained": args.pretrained,
              "runs": [r["run"] for r in runs],
              "known_clips": len(known), "unknown_clips": len(unknown),
              "auroc": auroc(known, unknown), "auroc_all_conditions": auroc(known_angles(runs, conditions), unknown),
              "table": table, "clean_calibrated_table": clean_table,
              "threshold_rad": chosen["threshold_rad"], "frr": chosen["frr"],
              "calibrated_on": f"4-fold cross-validation of recipe {args.arm} ({len(runs)} runs: held-out folds under "
                               f"{len(conditions)} recording conditions vs unlabeled/), operating point FRR {chosen['frr']:.0%}"}
    if args.per_class:  # what `soundarc export --calibration` gives the model: the chosen FRR's, per class by label
        report["per_class"] = per_class(runs, conditions)
        chosen_thresholds = report["per_class"]["thresholds_rad"][f"{chosen['frr']:g}"]
        report["class_thresholds_rad"] = dict(zip(runs[0]["labels"], chosen_thresholds, strict=True))
        report["calibrated_on"] += ", a threshold per class"
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"{args.report}.json").write_text(json.dumps(report, indent=1))
    top1 = " / ".join(f"{table[0]['top1'][c]:.1%}" for c in conditions)
    joint = f", joint embedding (pre-trained share {args.pretrained_share:g}" if args.pretrained_share else ""
    joint += (f", encoder {args.pretrained})" if args.pretrained else ")") if joint else ""
    lines = [f"Recipe `{args.arm}`{joint}, {len(runs)} CV runs, {len(known)} known clips, {len(unknown)} unknown clips; "
             f"AUROC {report['auroc']:.3f} clean, {report['auroc_all_conditions']:.3f} over all conditions. "
             f"Top-1 ({' / '.join(conditions)}): {top1}.", "",
             "Threshold calibrated on the known clips under all conditions (the rule):", "",
             *markdown(table, chosen, conditions), "", "Calibrated on clean known clips alone:", "",
             *markdown(clean_table, None, conditions)]
    if args.per_class:
        lines += ["", "A threshold per nearest class against the one, both on the known clips under all conditions "
                  "(pooled), fitted on every other seed (or pair), measured on the others, and the other way round (2-fold):", "",
                  *(per_class_markdown(two_fold) if (two_fold := report["per_class"]["two_fold"]) else ["(one seed: none)"]),
                  "", "In sample:", "",
                  *per_class_markdown(report["per_class"]["in_sample"])]
    (REPORTS / f"{args.report}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
