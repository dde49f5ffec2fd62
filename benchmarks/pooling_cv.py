"""How a clip's windows become its answer, measured by cross-validation (issue 19).

    python benchmarks/pooling_cv.py [--arm ssl-acl-acl-robust-oe-eq] [--seeds 0 1] [--report pooling_cv]

The service ranks a clip by the mean softmax over its windows with sound (core.answer). On every CV
run of the arm (benchmarks/cv_study.py), each held-out clip under each recording condition is also
ranked by the mean of those windows' logits (the same ranking as their mean log-softmax), by their
maximum softmax, and by one pass of the encoder over the frames of those windows joined (the encoder
ends in a mean over time, so it takes a window as long as the sound). With several seeds, the seeds'
window softmaxes are also averaged per fold (an ensemble: N times the inference) and set beside the
seeds' averaged weights (benchmarks/soup_cv.py: one model), which bounds what distilling the
ensemble into one model could add to the soup. Writes reports/REPORT.{json,md} (default pooling_cv).
"""

import argparse
import json

import numpy as np
import torch
from _data import REPORTS, cv_run, machine, mean_std
from cv_study import ESC10, NOISE, ROOT, window_outputs
from soup_cv import soup_run

from core.activity import ActivityConfig, voting_windows, window_activity_of
from core.features import FrontendConfig, patch_starts, tile_to_patch
from training.data import find_audio, scan_labeled
from training.robustness import CONDITIONS, condition_features
from training.run import load_checkpoint

POOLINGS = ["mean softmax (service)", "mean logits", "max softmax", "one pass over the sound"]


@torch.no_grad()
def one_pass(model, logmel: np.ndarray, gains: np.ndarray, frontend, activity) -> np.ndarray:
    """(C,) logits of the encoder run once over the frames of the windows with sound (all when none)."""
    logmel = tile_to_patch(logmel, frontend)
    active = window_activity_of(logmel, frontend, activity, gains)
    keep = np.zeros(len(logmel), dtype=bool)
    for start in patch_starts(len(logmel), frontend)[voting_windows(active)]:
        keep[start:start + frontend.patch_frames] = True
    x = torch.from_numpy(np.ascontiguousarray(logmel[keep]))[None, None]  # (1, 1, F', M)
    return model.classifier(model.encoder(x))[0].numpy()


def pooled(model, features, frontend, activity) -> dict[str, np.ndarray]:
    """{pooling: (K, C) clip scores} and "softmax": each clip's (N, C) window softmax, for the ensemble."""
    windows = [torch.from_numpy(logits) for logits, _ in window_outputs(model, features, frontend, activity)]
    softmax = [w.softmax(dim=1) for w in windows]
    return {POOLINGS[0]: np.stack([s.mean(dim=0).numpy() for s in softmax]),
            POOLINGS[1]: np.stack([w.mean(dim=0).numpy() for w in windows]),
            POOLINGS[2]: np.stack([s.max(dim=0).values.numpy() for s in softmax]),
            POOLINGS[3]: np.stack([one_pass(model, m, g, frontend, activity) for m, g in features]),
            "softmax": softmax}


def measure(arm: str, seeds: list[int], folds: list[int]) -> dict:
    """{"pooling": {pooling: {condition: [accuracy per run]}}, "ensemble"/"soup": {condition: [per fold]}}."""
    clips, names = scan_labeled(ESC10)
    index, noise = {n: i for i, n in enumerate(names)}, find_audio(NOISE)
    result = {"pooling": {p: {} for p in POOLINGS}, "ensemble": {}, "soup": {}}
    for fold in folds:
        held = [c for c in clips if c.fold == fold]
        labels = np.array([index[c.label] for c in held])
        softmax = {}  # {condition: per seed, per clip (N, C)}
        for seed in seeds:
            model, info = load_checkpoint(cv_run(arm, fold, seed))
            frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
            for condition, features in condition_features([c.path for c in held], noise, frontend, ROOT / "cache").items():
                scores = pooled(model, features, frontend, activity)
                for p in POOLINGS:
                    result["pooling"][p].setdefault(condition, []).append(float((scores[p].argmax(1) == labels).mean()))
                softmax.setdefault(condition, []).append(scores["softmax"])
        if len(seeds) > 1:
            add_ensemble(result, softmax, labels, soup_run([arm], seeds, fold))
    return result


def add_ensemble(result: dict, softmax: dict, labels: np.ndarray, soup) -> None:
    """Append one fold's ensemble accuracy (the seeds' window softmaxes averaged) per condition, and the
    soup run's (soup_cv.py) where it was made."""
    for condition, per_seed in softmax.items():
        answers = [torch.stack([s[k].mean(dim=0) for s in per_seed]).mean(dim=0).argmax() for k in range(len(labels))]
        result["ensemble"].setdefault(condition, []).append(float((np.array(answers) == labels).mean()))
        if (soup / "cv.json").exists():
            accuracy = json.loads((soup / "cv.json").read_text())["conditions"][condition]["accuracy"]
            result["soup"].setdefault(condition, []).append(accuracy)


def markdown(arm: str, seeds: list[int], result: dict) -> str:
    columns = [c for c in CONDITIONS if c in result["pooling"][POOLINGS[0]]]
    cell = lambda values: f"{100 * mean_std(values)['mean']:.1f} ± {100 * mean_std(values)['std']:.1f}"  # noqa: E731
    lines = [f"`{arm}`, seeds {seeds}, {machine()}: clip accuracy % by how its windows are pooled "
             "(mean ± std over the fold x seed runs).", "",
             "| pooling | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    lines += [f"| {p} | " + " | ".join(cell(result["pooling"][p][c]) for c in columns) + " |" for p in POOLINGS]
    rows = [(f"ensemble of seeds {seeds} ({len(seeds)} models)", result["ensemble"]),
            (f"soup of seeds {seeds} (one model)", result["soup"])]
    if result["ensemble"]:
        lines += ["", "Per fold (mean ± std over folds):", "", "| models | " + " | ".join(columns) + " |",
                  "|---|" + "---|" * len(columns)]
        lines += [f"| {name} | " + " | ".join(cell(r[c]) if c in r else "–" for c in columns) + " |" for name, r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", default="ssl-acl-acl-robust-oe-eq")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--report", default="pooling_cv", help="reports/REPORT.json and .md (another machine: another name)")
    args = parser.parse_args()
    result = measure(args.arm, args.seeds, args.folds)
    REPORTS.mkdir(exist_ok=True)
    report = {"arm": args.arm, "seeds": args.seeds, "machine": machine(), **result}
    (REPORTS / f"{args.report}.json").write_text(json.dumps(report, indent=1) + "\n")
    (REPORTS / f"{args.report}.md").write_text(markdown(args.arm, args.seeds, result))
    print(markdown(args.arm, args.seeds, result))


if __name__ == "__main__":
    main()
