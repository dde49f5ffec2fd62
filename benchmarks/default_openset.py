"""Give the shipped model its open set: class prototypes from its own training clips (folds 1-4)
and the threshold of its validation twin, calibrated on held-out data.

    python benchmarks/default_openset.py [--frr 0.1]

The shipped model trained on every fold, so no held-out fold is left to calibrate it on. Its twin
runs/default-val (the same recipe on folds 1-3) is exported with prototypes from folds 1-3 and a
threshold calibrated on fold 4 for `--frr`; that angle is given to models/default. See
reports/openset_bench_calib4.json for the rates this operating point has on the twin.
"""

import argparse
from dataclasses import replace

from _data import ROOT, require_data

from export.onnx_export import export_artifact
from export.open_set import attach_open_set, save_open_set


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--frr", type=float, default=0.1)
    parser.add_argument("--twin", default=str(ROOT / "runs" / "default-val"))
    parser.add_argument("--model", default=str(ROOT / "models" / "default"))
    args = parser.parse_args()
    esc = str(require_data("esc10"))
    twin = export_artifact(args.twin, ROOT / "reports" / "tmp" / "default-val-model")
    threshold = attach_open_set(twin, esc, (1, 2, 3), calibration_folds=(4,), frr=args.frr).threshold_rad
    own = attach_open_set(args.model, esc, (1, 2, 3, 4), frr=args.frr)  # prototypes; threshold replaced below
    where = "fold 4, through the validation twin runs/default-val (same recipe trained on folds 1-3)"
    final = save_open_set(args.model, replace(own, threshold_rad=threshold, calibrated_on=where))
    print(f"{args.model}: threshold {final.threshold_rad:.4f} rad for a false-rejection rate of {args.frr} on {where}")


if __name__ == "__main__":
    main()
