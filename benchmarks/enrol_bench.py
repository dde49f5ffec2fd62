"""Few-shot enrolment of classes the model never saw: leave two ESC-10 classes out of training,
enrol them from 1 or 5 clips each, and classify their remaining clips among all ten classes.

    python benchmarks/enrol_bench.py [--leave-out crying_baby helicopter] [--draws 20]

1) Trains the default recipe (configs/default-model.yaml, cross-entropy) on the other eight classes,
   folds 1-3 (validation fold 4), in runs/leaveout-<classes> (resumable), and exports it with its
   class prototypes (training clips).
2) For each shot count and `--draws` random draws: enrols the left-out classes through
   core.classes (the code behind POST /classes) and classifies, by cosine to every prototype:
   the left-out classes' remaining clips (folds 1-4 less the enrolment clips) and the eight known
   classes' fold-4 clips (to show what enrolment costs them).
Writes reports/enrol_bench_<classes>.json.
"""

import argparse
import csv
import json
import subprocess
import sys

import numpy as np
from _data import REPORTS, ROOT, require_data

from core.artifact import load_artifact
from core.classes import ClassSet
from core.runtime import RuntimeConfig, create_runtime
from export.onnx_export import export_artifact
from export.open_set import attach_open_set, clip_embeddings
from training.data import scan_labeled


def write_subset(esc, leave_out: list[str], out):
    """An ESC-50 layout without `leave_out`: a filtered meta CSV beside a link to the audio."""
    (out / "meta").mkdir(parents=True, exist_ok=True)
    if not (out / "audio").exists():
        (out / "audio").symlink_to((esc / "audio").resolve())
    meta = sorted((esc / "meta").glob("*.csv"))[0]
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    kept = [r for r in rows if r["category"] not in leave_out]
    with open(out / "meta" / meta.name, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def train(data, run):
    cmd = [sys.executable, "-m", "soundarc.cli", "train", "finetune", "--config", "configs/default-model.yaml",
           "--set", "loss=ce", "--set", "seed=0", "--set", f"labeled={data.relative_to(ROOT)}", "--out", str(run)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def predict(classes: ClassSet, embeddings: np.ndarray) -> np.ndarray:
    """(N, D) clip embeddings -> (N,) label of the nearest prototype."""
    return np.array([classes.nearest(e)[0] for e in embeddings])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--leave-out", nargs=2, default=["crying_baby", "helicopter"])
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5])
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()
    esc = require_data("esc10")
    name = "leaveout-" + "-".join(args.leave_out)
    data, run = ROOT / "cache" / name, ROOT / "runs" / name
    write_subset(esc, args.leave_out, data)
    train(data, run)
    model = export_artifact(run, ROOT / "reports" / "tmp" / f"{name}-model")
    attach_open_set(model, str(data), (1, 2, 3))
    artifact = load_artifact(model)
    runtime = create_runtime(artifact, RuntimeConfig("cpu"))
    clips, _ = scan_labeled(esc)
    embeddings = clip_embeddings(runtime, [c.path for c in clips])  # (N, D), every ESC-10 clip once
    labels = np.array([c.label for c in clips])
    folds = np.array([c.fold for c in clips])
    known_val = np.flatnonzero(~np.isin(labels, args.leave_out) & (folds == 4))

    rng = np.random.default_rng(0)
    results = {}
    for shots in args.shots:
        new_acc, known_acc, per_class = [], [], {c: [] for c in args.leave_out}
        for _ in range(args.draws):
            classes = ClassSet.of(artifact)
            enrolled = {c: rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in args.leave_out}
            for c, idx in enrolled.items():
                classes = classes.enrol(c, embeddings[idx])
            test = np.setdiff1d(np.flatnonzero(np.isin(labels, args.leave_out)), np.concatenate(list(enrolled.values())))
            predicted = predict(classes, embeddings[test])
            new_acc.append(float((predicted == labels[test]).mean()))
            for c in args.leave_out:
                mask = labels[test] == c
                per_class[c].append(float((predicted[mask] == c).mean()))
            known_acc.append(float((predict(classes, embeddings[known_val]) == labels[known_val]).mean()))
        results[f"{shots}-shot"] = {
            "left_out_accuracy_mean": float(np.mean(new_acc)), "left_out_accuracy_std": float(np.std(new_acc)),
            "per_class_mean": {c: float(np.mean(v)) for c, v in per_class.items()},
            "known_fold4_accuracy_mean": float(np.mean(known_acc)), "known_fold4_accuracy_std": float(np.std(known_acc))}
    base_pred = predict(ClassSet.of(artifact), embeddings[known_val])
    report = {"leave_out": args.leave_out, "run": str(run.relative_to(ROOT)), "draws": args.draws,
              "classes_total": len(artifact.labels) + len(args.leave_out), "chance": 1 / (len(artifact.labels) + 2),
              "known_fold4_accuracy_prototypes_only_builtins": float((base_pred == labels[known_val]).mean()),
              "results": results}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"enrol_bench_{'-'.join(args.leave_out)}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
