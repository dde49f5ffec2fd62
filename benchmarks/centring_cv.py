"""Does centring the embedding pay? (issue 19) From the cross-validation runs of benchmarks/cv_study.py.

    python benchmarks/centring_cv.py --arms ARM... [--seeds S...]

The encoder's h is a mean of ReLU outputs: every embedding lies in the positive orthant, so all
clips are within a few tenths of a radian of each other. Centring (SimpleShot's CL2N) subtracts a
mean before the L2 norm, here either of the window embeddings the model serves, u = h/|h|
("centred": (u − c)/|u − c|, c the mean u; the service can apply it to its model's output), or of h
("centred_h": (h − c)/|h − c|, c the mean h; needs the norm of h, inside the model). Per CV run, c is
the mean over the windows with sound of its training folds; the held-out fold's clips are embedded
as the service does (windows with sound, each embedded, averaged, normalised), plain and centred,
and measured as benchmarks/embedding_cv.py measures: retrieval P@1 / mAP, few-shot 1 / 5,
open-set AUROC against unlabeled/ (never in training) by the angle to the training-fold class
prototypes. Writes reports/centring_cv.json and prints the table.
"""

import argparse
import json

import numpy as np
from _data import REPORTS, machine, mean_std, training_clips
from cv_study import clean_features, measure_runs, window_outputs
from embedding_cv import SHOTS, few_shot, retrieval

from core.activity import ActivityConfig
from core.answer import clip_embedding
from core.features import FrontendConfig
from core.openset import auroc
from training.run import load_checkpoint

VARIANTS = ("plain", "centred", "centred_h")
METRICS = ("retrieval_p1", "retrieval_map", *(f"few_shot_{k}" for k in SHOTS), "open_set_auroc")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clip_embeddings(hs: list[np.ndarray], centre: np.ndarray) -> np.ndarray:
    """(K, D): per clip, its windows' (h − centre) unit-normalised, then the service's clip embedding."""
    return np.stack([clip_embedding(unit(h - centre)) for h in hs])


def metrics(train_e, train_y, held_e, held_y, unknown_e) -> dict:
    prototypes = unit(np.stack([train_e[train_y == k].mean(axis=0) for k in np.unique(train_y)]))

    def angles(e):
        return np.arccos(np.clip(e @ prototypes.T, -1, 1).max(axis=1))

    p1, m_ap = retrieval(held_e, held_y)
    rng = np.random.default_rng(0)
    return {"retrieval_p1": p1, "retrieval_map": m_ap, **{f"few_shot_{k}": few_shot(held_e, held_y, k, rng) for k in SHOTS},
            "open_set_auroc": auroc(angles(held_e), angles(unknown_e))}


def run_metrics(run, clips, index, unknown_features) -> dict:
    fold = json.loads((run / "cv.json").read_text())["fold"]
    model, info = load_checkpoint(run)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])

    def window_h(features) -> list[np.ndarray]:  # per clip, h (N, D) of its windows with sound
        return [h for _, h in window_outputs(model, features, frontend, activity)]

    def embed(subset):
        return window_h(clean_features([c.path for c in subset], frontend)), np.array([index[c.label] for c in subset])

    train_h, train_y = embed(training_clips(clips, fold))
    held_h, held_y = embed([c for c in clips if c.fold == fold])
    unknown_h = window_h(unknown_features)
    served = [[unit(h) for h in hs] for hs in (train_h, held_h, unknown_h)]  # u = h/|h|, as the model serves
    out = {"fold": fold}
    for variant, (train, held, unknown) in zip(VARIANTS, (served, served, (train_h, held_h, unknown_h))):
        centre = 0 if variant == "plain" else np.concatenate(train).mean(axis=0)  # (D,)
        out[variant] = metrics(clip_embeddings(train, centre), train_y, clip_embeddings(held, centre), held_y,
                               clip_embeddings(unknown, centre))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, help="default: every seed run")
    args = parser.parse_args()
    path = REPORTS / "centring_cv.json"
    report = measure_runs(path, args.arms, args.seeds, run_metrics)
    summary = {arm: {variant: {m: mean_std([r[variant][m] for r in runs.values()]) for m in METRICS}
                     for variant in VARIANTS} | {"runs": len(runs)} for arm, runs in report.items()}
    path.write_text(json.dumps({"machine": machine(), "summary": summary, "runs": report}, indent=1) + "\n")
    print("| recipe | runs | embedding | " + " | ".join(METRICS) + " |")
    for arm, row in summary.items():
        for variant in VARIANTS:
            cells = " | ".join(f"{row[variant][m]['mean']:.3f}" for m in METRICS)
            print(f"| {arm} | {row['runs']} | {variant} | {cells} |")


if __name__ == "__main__":
    main()
