"""Embedding metrics per recipe, from the cross-validation runs of benchmarks/cv_study.py (issue 19).

    python benchmarks/embedding_cv.py [--arms ce-robust acl-robust ...] [--merge] [--report NAME]
        [--pretrained-share S [--pretrained runs/pretrain/NAME]]

Each CV run's clip embeddings (mean over the windows with sound, L2-normalised, as the service
computes them) of its held-out fold, clean:
- retrieval: each held-out clip queries the other 79; P@1 and mAP by cosine;
- few-shot: 1 and 5 clips per class drawn from the held-out fold (20 draws) make the prototypes,
  the fold's other clips are classified by the nearest prototype (the enrolment path, on classes
  the model was trained on but clips it never saw);
- open set: AUROC of the held-out clips' angles to the training-fold prototypes against those of
  the unlabelled game sounds of unlabeled/ (never in training), from each run's cv.json;
- sounds never heard: retrieval P@1 / mAP among the clips of unlabeled/ whose file names share a
  stem (the variants of one game sound, NEW_SOUNDS_MIN or more of them), what /search meets in an
  archive of sounds the model was never taught.
`--pretrained-share S`: each run served with the joint embedding (training.model.InferenceModel; the
angles from its cv-share<S>.json), reported as the row "ARM (joint S)".
Mean ± std over the runs of each arm. Classes left out of training altogether are measured by
benchmarks/enrol_bench.py, which needs its own training runs. Writes reports/embedding_cv.json,
reports/embedding_cv.md and reports/study/angles_per_arm.png (angle distributions per arm); with
--merge the arms of the existing report that are not measured now are kept, and the plot of the
arms measured now goes to reports/study/angles_<arms>.png. `--report NAME` writes reports/NAME.{json,md}
instead (another machine's encoder draw, as cv_study.py's --report).
"""

import argparse
import json
import re
from collections import Counter

import numpy as np
from _data import (
    CV_RUNS,
    REPORTS,
    add_joint_arguments,
    cv_result,
    cv_runs,
    encoder_tag,
    joint_arguments,
    mean_std,
    recipe_table,
    require_data,
)
from cv_study import clean_features, outputs

from core.activity import ActivityConfig
from core.features import FrontendConfig
from core.openset import auroc
from training.data import find_audio, scan_labeled
from training.run import load_inference_model

SHOTS = (1, 5)
DRAWS = 20
NEW_SOUNDS_MIN = 4  # clips per file-name stem of unlabeled/ to count as a sound


def new_sounds() -> tuple[list, np.ndarray]:
    """The clips of unlabeled/ grouped by file-name stem (e.g. wesnoth_horn-2.ogg: wesnoth_horn), the
    groups of NEW_SOUNDS_MIN or more: (paths, (N,) group index)."""
    stems = {p: re.sub(r"[-_0-9]*$", "", p.stem) for p in find_audio(require_data("unlabeled"))}
    counts = Counter(stems.values())
    kept = sorted(p for p, s in stems.items() if counts[s] >= NEW_SOUNDS_MIN)
    groups = sorted({stems[p] for p in kept})
    return kept, np.array([groups.index(stems[p]) for p in kept])


def retrieval(h: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """P@1 and mAP of every clip querying the others by cosine; h (N, D) unit rows."""
    sims = h @ h.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :-1]  # (N, N-1): the others, most similar first
    hits = y[order] == y[:, None]  # (N, N-1)
    precision_at = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    ap = (precision_at * hits).sum(axis=1) / np.maximum(hits.sum(axis=1), 1)
    return float(hits[:, 0].mean()), float(ap.mean())


def few_shot(h: np.ndarray, y: np.ndarray, shots: int, rng: np.random.Generator) -> float:
    """Nearest-prototype accuracy with `shots` clips per class as prototypes, mean over DRAWS draws."""
    classes = np.unique(y)
    accuracies = []
    for _ in range(DRAWS):
        chosen = np.concatenate([rng.choice(np.flatnonzero(y == k), shots, replace=False) for k in classes])
        rest = np.setdiff1d(np.arange(len(y)), chosen)
        protos = np.stack([h[chosen][y[chosen] == k].mean(axis=0) for k in classes])
        protos /= np.linalg.norm(protos, axis=1, keepdims=True)
        accuracies.append(float((classes[(h[rest] @ protos.T).argmax(axis=1)] == y[rest]).mean()))
    return float(np.mean(accuracies))


def run_metrics(run, clips, index, new: tuple[list, np.ndarray], pretrained_share: float = 0.0,
                pretrained: str | None = None) -> dict:
    result = json.loads(cv_result(run, pretrained_share, pretrained).read_text())
    fold = result["fold"]
    model, info = load_inference_model(run, pretrained_share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    held = [c for c in clips if c.fold == fold]
    y = np.array([index[c.label] for c in held])
    _, h = outputs(model, clean_features([c.path for c in held], frontend), frontend, activity)
    p1, m_ap = retrieval(h, y)
    new_p1, new_map = retrieval(outputs(model, clean_features(new[0], frontend), frontend, activity)[1], new[1])
    rng = np.random.default_rng(0)
    known, unknown = np.array(result["conditions"]["clean"]["angles"]), np.array(result["unknown_angles"])
    return {"fold": fold, "retrieval_p1": p1, "retrieval_map": m_ap,
            **{f"few_shot_{k}": few_shot(h, y, k, rng) for k in SHOTS},
            "open_set_auroc": float(auroc(known, unknown)), "new_sounds_p1": new_p1, "new_sounds_map": new_map,
            "known_angles": known.tolist(), "unknown_angles": unknown.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=sorted(p.name for p in CV_RUNS.iterdir() if p.is_dir()))
    parser.add_argument("--merge", action="store_true", help="keep the other arms of the report")
    parser.add_argument("--report", default="embedding_cv", help="reports/REPORT.json and .md")
    parser.add_argument("--seeds", nargs="+", type=int, help="the runs of these seeds (default: all)")
    add_joint_arguments(parser, "serve each run with the joint embedding (cv_study.py --pretrained-share first)")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    clips, names = scan_labeled(require_data("esc10"))
    index = {n: i for i, n in enumerate(names)}
    new = new_sounds()
    report = {}
    for arm in args.arms:
        runs = [r for s in (args.seeds or [None]) for r in cv_runs(arm, s)]
        if runs:
            encoder = f", {encoder_tag(pretrained)[1:]}" if pretrained else ""
            row = f"{arm} (joint {share:g}{encoder})" if share else arm
            report[row] = {run.name: run_metrics(run, clips, index, new, share, pretrained) for run in runs}
            print(row, summary(report[row]), flush=True)
    compact = {arm: {k: {m: v for m, v in r.items() if not m.endswith("angles")} for k, r in runs.items()}
               for arm, runs in report.items()}
    path = REPORTS / f"{args.report}.json"
    if args.merge and path.exists():
        compact = {**json.loads(path.read_text())["runs"], **compact}
    table = {arm: summary(runs) for arm, runs in compact.items()}
    REPORTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"summary": table, "runs": compact}, indent=1) + "\n")
    markdown = recipe_table(table, {arm: len(runs) for arm, runs in compact.items()}, list(next(iter(table.values()))),
                            lambda m: f"{m['mean']:.3f} ± {m['std']:.3f}")
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
    name = re.sub(r"[^\w.+-]+", "-", "_".join(report)).strip("-")  # "ARM (joint 0.75)" -> ARM-joint-0.75
    plot_angles(report, REPORTS / "study" / (f"angles_{name}.png" if args.merge else "angles_per_arm.png"))


def summary(runs: dict) -> dict:
    keys = ("retrieval_p1", "retrieval_map", *(f"few_shot_{k}" for k in SHOTS), "open_set_auroc", "new_sounds_p1",
            "new_sounds_map")
    return {k: mean_std([r[k] for r in runs.values()]) for k in keys if all(k in r for r in runs.values())}


def plot_angles(report: dict, path) -> None:
    """Per arm: the held-out known clips' angles to the nearest prototype against the unknown clips'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(report), figsize=(3.6 * len(report), 3), sharey=True, squeeze=False)
    bins = np.linspace(0, 1.6, 41)
    for ax, (arm, runs) in zip(axes[0], report.items()):
        known = np.concatenate([r["known_angles"] for r in runs.values()])
        unknown = np.concatenate([r["unknown_angles"] for r in runs.values()])
        ax.hist(known, bins, density=True, alpha=0.6, label="held-out known clips")
        ax.hist(unknown, bins, density=True, alpha=0.6, label="unknown (unlabeled/)")
        ax.set(title=arm, xlabel="angle to the nearest class prototype (rad)")
    axes[0][0].legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
