"""Is one recipe really better than another? Paired, clip by clip, over their CV runs (issue 19).

    python benchmarks/compare_cv.py ssl-acl-acl-robust-oe-eq-bc ssl-acl-acl-robust-oe-eq
    python benchmarks/compare_cv.py ssl-acl-acl-robust-oe-eq-soup ssl-acl-acl-robust-oe-eq:0,1 --report compare_cv_epyc

Each held-out clip gets, per arm, the share of that arm's runs (seeds, or one soup) that answered it
right (`ARM:0,1`: only those seeds' runs); the difference of the two arms is the mean over clips of A's
share less B's, per recording condition. ESC-50 clips come in takes of one source recording
(fold-source-take-class), which are not independent, so the uncertainty is computed over sources, not
clips: a 95 % interval from 10 000 bootstrap resamplings of the sources, and a two-sided p-value from
10 000 random swaps of A and B within each source (a paired randomisation test). Only folds both arms hold
are compared. The interval is the uncertainty of the held-out clips, not of training: each arm's runs
are averaged first, so more seeds make its share a steadier figure, and the spread between seeds stays
in cv_study.py's ± std. Read the p-value first: where only a few sources differ, the bootstrap interval
is too narrow. Writes reports/REPORT.json and .md (pairs measured before are kept).
"""

import argparse
import json
from collections import defaultdict

import numpy as np
from _data import REPORTS, fold_of, group_runs_of
from cv_study import CONDITIONS, ESC10

from training.data import scan_labeled

RESAMPLES = 10_000


def clip_scores(arm_seeds: str, clips) -> dict[str, dict[str, float]]:
    """{condition: {clip name: share of the runs of ARM or ARM:SEED,SEED that answered it right}}."""
    _, runs = group_runs_of(arm_seeds)
    right, count = defaultdict(lambda: defaultdict(float)), defaultdict(lambda: defaultdict(int))
    for run in runs:
        result = json.loads((run / "cv.json").read_text())
        held = [c.path.name for c in clips if c.fold == fold_of(run)]
        for condition, scores in result["conditions"].items():
            for name, correct in zip(held, scores["correct"], strict=True):
                right[condition][name] += correct
                count[condition][name] += 1
    return {cond: {n: right[cond][n] / count[cond][n] for n in right[cond]} for cond in right}


def source_of(name: str) -> str:
    """The source recording of an ESC-50 clip name: 1-172649-B-40.ogg -> 1-172649."""
    return "-".join(name.split("-")[:2])


def paired(a: dict[str, float], b: dict[str, float], rng) -> dict:
    """The difference A − B over the clips both hold, its 95 % interval and p-value over sources."""
    names = sorted(set(a) & set(b))
    sources = sorted({source_of(n) for n in names})
    index = {s: i for i, s in enumerate(sources)}
    source = np.array([index[source_of(n)] for n in names])  # (N,) each clip's source
    per_source = np.zeros(len(sources))  # (S,) summed differences of each source's clips
    np.add.at(per_source, source, [a[n] - b[n] for n in names])
    clips = np.bincount(source, minlength=len(sources))  # (S,)
    picks = rng.integers(0, len(sources), (RESAMPLES, len(sources)))  # (R, S)
    boot = per_source[picks].sum(axis=1) / clips[picks].sum(axis=1)  # (R,)
    signs = rng.choice([-1.0, 1.0], (RESAMPLES, len(sources)))  # (R, S)
    observed = per_source.sum() / len(names)
    null = (signs * per_source).sum(axis=1) / len(names)  # (R,)
    return {"clips": len(names), "sources": len(sources), "a": float(np.mean([a[n] for n in names])),
            "b": float(np.mean([b[n] for n in names])), "difference": float(observed),
            "interval": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "p": float((1 + (np.abs(null) >= abs(observed) - 1e-12).sum()) / (1 + RESAMPLES))}  # the observed counts


def write_report(pair: str, result: dict, name: str) -> None:
    """Merges {condition: paired(...)} of "A vs B" into reports/NAME.json and rewrites NAME.md, a row per
    pair and condition."""
    path = REPORTS / f"{name}.json"
    pairs = json.loads(path.read_text()) if path.exists() else {}
    pairs[pair] = result
    REPORTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(pairs, indent=1))
    lines = ["| A vs B | condition | clips (sources) | A | B | A − B | 95 % interval | p |", "|---|---|---|---|---|---|---|---|"]
    for key, conditions in pairs.items():
        for condition, r in conditions.items():
            low, high = r["interval"]
            lines.append(f"| {key} | {condition} | {r['clips']} ({r['sources']}) | {100 * r['a']:.1f} | "
                         f"{100 * r['b']:.1f} | {100 * r['difference']:+.1f} | {100 * low:+.1f} to {100 * high:+.1f} | "
                         f"{'< 0.001' if r['p'] < 0.001 else format(r['p'], '.3f')} |")
    (REPORTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:2] + [line for line in lines if line.startswith(f"| {pair} |")]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arms", nargs=2, metavar="ARM", help="two arms of runs/cv (a soup arm too); ARM:0,1 for "
                        "only those seeds' runs")
    parser.add_argument("--report", default="compare_cv", help="reports/REPORT.json and .md")
    args = parser.parse_args()
    clips, _ = scan_labeled(ESC10)
    a, b = (clip_scores(arm, clips) for arm in args.arms)
    rng = np.random.default_rng(0)
    result = {c: paired(a[c], b[c], rng) for c in CONDITIONS if c in a and c in b}
    write_report(" vs ".join(args.arms), result, args.report)


if __name__ == "__main__":
    main()
