"""Open-set rejection on real audio: known ESC-10 clips against unknown game sounds.

    python benchmarks/openset_bench.py [--run runs/default-val] [--frr 0.05]

The validation run (trained on folds 1-3) is exported with prototypes from its training clips and
the threshold calibrated the way the shipped model is (on its training clips, for `--frr`).
Known = fold 4 (never trained on); unknown = ../shared/data/unlabeled (game sound effects; some are
animals or footsteps not unlike ESC-10 classes, so this is a hard, honest unknown set).
Reports AUROC of the nearest-prototype angle, and the real false-rejection (fold 4) and
false-accept (unknown) rates at the calibrated threshold, and the trade-off curve: for several
false-rejection rates on fold 4, the threshold that gives it and the false-accept rate there.
Writes reports/openset_bench.json.
"""

import argparse
import json
from pathlib import Path

import numpy as np
from _data import REPORTS, ROOT, require_data

from core.artifact import load_artifact
from core.audio import AUDIO_SUFFIXES
from core.openset import auroc
from core.runtime import RuntimeConfig, create_runtime
from export.onnx_export import export_artifact
from export.open_set import attach_open_set, clip_embeddings
from training.data import scan_labeled


def angles(open_set, embeddings: np.ndarray) -> np.ndarray:
    return np.array([open_set.nearest(e)[1] for e in embeddings])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", default=str(ROOT / "runs" / "default-val"))
    parser.add_argument("--frr", type=float, default=0.05)
    parser.add_argument("--calibration-folds", type=int, nargs="*", default=[],
                        help="calibrate on these folds instead of the training clips (then the measured "
                             "false-rejection rate on them is the target by construction)")
    args = parser.parse_args()
    esc, unlabeled = require_data("esc10"), require_data("unlabeled")
    config = json.loads((Path(args.run) / "checkpoint" / "checkpoint.json").read_text())["config"]
    out = export_artifact(args.run, ROOT / "reports" / "tmp" / "openset-model")
    open_set = attach_open_set(out, str(esc), tuple(config["train_folds"]), tuple(args.calibration_folds), args.frr)
    runtime = create_runtime(load_artifact(out), RuntimeConfig("cpu"))
    clips, _ = scan_labeled(esc)
    known = angles(open_set, clip_embeddings(runtime, [c.path for c in clips if c.fold in config["val_folds"]]))
    unknown_paths = sorted(p for p in unlabeled.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    unknown = angles(open_set, clip_embeddings(runtime, unknown_paths))
    t = open_set.threshold_rad
    report = {"run": args.run, "frr_target": args.frr, "threshold_rad": t, "calibrated_on": open_set.calibrated_on,
              "known_clips": len(known), "unknown_clips": len(unknown), "auroc": auroc(known, unknown),
              "false_rejection_rate": float((known > t).mean()), "false_accept_rate": float((unknown <= t).mean()),
              "known_angle_median": float(np.median(known)), "unknown_angle_median": float(np.median(unknown)),
              "tradeoff_on_fold4": [{"frr": f, "threshold_rad": float(np.quantile(known, 1 - f)),
                                     "false_accept_rate": float((unknown <= np.quantile(known, 1 - f)).mean())}
                                    for f in (0.01, 0.05, 0.1, 0.2, 0.3)]}
    REPORTS.mkdir(exist_ok=True)
    name = "openset_bench" + (f"_calib{''.join(map(str, args.calibration_folds))}" if args.calibration_folds else "")
    (REPORTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
