"""How much of what ships is its seeds: per held-out fold, the spread of clean accuracy and of the five conditions'
mean over the runs of each group, each clip answered as served (amplitude vote; the window caches of vote_cv.py).

    python benchmarks/form_spread.py ARM:0,1,2,3 ARM-ens:0+1,2+3 [--pretrained-share 0.6 --prototype-weight 0.5]
"""

import argparse

import numpy as np
from vote_cv import group_runs

from training.robustness import CONDITIONS


def fold_figures(runs: dict, vote: str) -> dict[int, list[tuple[float, float]]]:
    """{fold: [(clean %, five conditions' mean %) per run]}."""
    figures = {}
    for result in runs.values():
        accuracy = {c: 100 * float(np.mean(result["correct"][vote][c])) for c in CONDITIONS}
        five = float(np.mean([accuracy[c] for c in CONDITIONS if c != "clean"]))
        figures.setdefault(result["fold"], []).append((accuracy["clean"], five))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("groups", nargs="+", help="ARM:SEEDS, as vote_cv.py takes them")
    parser.add_argument("--pretrained-share", type=float, default=0.6)
    parser.add_argument("--prototype-weight", type=float, default=0.5)
    parser.add_argument("--vote", default="amplitude")
    args = parser.parse_args()
    for group in args.groups:
        print(group)
        for fold, values in sorted(fold_figures(group_runs(group, args.pretrained_share, None, args.prototype_weight),
                                                args.vote).items()):
            v = np.array(values)  # (runs, 2)
            print(f"  fold {fold}: clean {np.round(v[:, 0], 1).tolist()} (range {np.ptp(v[:, 0]):.1f}), "
                  f"five conditions {np.round(v[:, 1], 2).tolist()} (range {np.ptp(v[:, 1]):.2f})")


if __name__ == "__main__":
    main()
