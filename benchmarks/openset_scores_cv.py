"""Which score tells unknown sounds best? (issue 19) From the cross-validation runs of benchmarks/cv_study.py.

    python benchmarks/openset_scores_cv.py --arms ARM... [--seeds S...]

The service calls a clip "unknown" when its angle to the nearest class prototype exceeds a threshold.
Per CV run, the held-out fold's clips (known classes) against the unlabelled game sounds of
unlabeled/ (never in training), each clip scored as the service scores it (windows with sound) by:
- angle: to the nearest prototype of the training folds' classes (the service's rule);
- msp: 1 − the ranking's top probability (mean softmax over the windows);
- max_logit: − the largest class logit averaged over the windows;
- energy: − logsumexp of the window-averaged logits;
- angle_x_msp: the angle divided by the top probability (far and unsure both count).
AUROC of each (1: every unknown clip scores above every known one). Writes
reports/openset_scores_cv.json and prints the table.
"""

import argparse
import json

import numpy as np
from _data import REPORTS, machine, mean_std, training_clips
from cv_study import clean_features, measure_runs, window_outputs
from scipy.special import logsumexp, softmax

from core.activity import ActivityConfig
from core.answer import clip_embedding
from core.features import FrontendConfig
from core.openset import auroc, class_prototypes
from training.run import load_checkpoint

SCORES = ("angle", "msp", "max_logit", "energy", "angle_x_msp")


def clip_outputs(model, clips, frontend, activity) -> tuple[np.ndarray, np.ndarray]:
    """Per clip (log-mel, gains) -> window-averaged logits (K, C) and clip embeddings (K, D), over
    the windows with sound, the embedding as the service computes it."""
    windows = window_outputs(model, clips, frontend, activity)
    return np.stack([z.mean(axis=0) for z, _ in windows]), np.stack([clip_embedding(unit(h)) for _, h in windows])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def scores(logits: np.ndarray, embeddings: np.ndarray, prototypes: np.ndarray) -> dict[str, np.ndarray]:
    """(K, C) mean logits, (K, D) clip embeddings -> {score: (K,)}, higher = more likely unknown.
    msp uses the mean of window softmaxes, as the service ranks; here from the mean logits, a close
    stand-in (the same top class for nearly every clip)."""
    angle = np.arccos(np.clip(embeddings @ prototypes.T, -1, 1).max(axis=1))
    top = softmax(logits, axis=1).max(axis=1)
    return {"angle": angle, "msp": 1 - top, "max_logit": -logits.max(axis=1), "energy": -logsumexp(logits, axis=1),
            "angle_x_msp": angle / top}


def run_metrics(run, clips, index, unknown_features) -> dict:
    fold = json.loads((run / "cv.json").read_text())["fold"]
    model, info = load_checkpoint(run)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])

    def outputs(subset):
        return clip_outputs(model, clean_features([c.path for c in subset], frontend), frontend, activity)

    train = training_clips(clips, fold)
    _, train_e = outputs(train)
    prototypes = class_prototypes(train_e, np.array([index[c.label] for c in train]), len(index))
    known = scores(*outputs([c for c in clips if c.fold == fold]), prototypes)
    unknown = scores(*clip_outputs(model, unknown_features, frontend, activity), prototypes)
    return {"fold": fold, **{s: auroc(known[s], unknown[s]) for s in SCORES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, help="default: every seed run")
    args = parser.parse_args()
    path = REPORTS / "openset_scores_cv.json"
    report = measure_runs(path, args.arms, args.seeds, run_metrics)
    summary = {arm: {s: mean_std([r[s] for r in runs.values()]) for s in SCORES} | {"runs": len(runs)}
               for arm, runs in report.items()}
    path.write_text(json.dumps({"machine": machine(), "summary": summary, "runs": report}, indent=1) + "\n")
    print("| recipe | runs | " + " | ".join(f"AUROC {s}" for s in SCORES) + " |")
    for arm, row in summary.items():
        print(f"| {arm} | {row['runs']} | " + " | ".join(f"{row[s]['mean']:.3f} ± {row[s]['std']:.3f}" for s in SCORES) + " |")


if __name__ == "__main__":
    main()
