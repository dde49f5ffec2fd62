"""How much of the joint embedding should be the pre-trained encoder's? (issue 19)

    python benchmarks/joint_share.py [--arm ssl-acl-rc-acl-robust-oe-eq] [--shares 0 0.25 0.5 0.6 0.75 0.9 1]
        [--pretrained runs/pretrain/NAME] [--report joint_share]

On the leave-out runs of benchmarks/enrol_bench.py (run it first: each run is trained without two
ESC-10 classes, all five pairs): every ESC-10 clip embedded as the service would with the joint
embedding at each share s (training.model.InferenceModel: the windows with sound, each
[√(1−s)·u, √s·v], averaged and normalised; s = 0 is the fine-tuned embedding alone, s = 1 the
pre-trained encoder alone). Then, as enrol_bench measures it, 5 clips of each left-out class
(20 draws) make its prototype beside the eight known classes' prototypes (their folds 1-3 clips),
and the left-out classes' other clips and the known classes' fold-4 clips are named by the nearest
prototype. Rule, stated before the results: the share with the best left-out accuracy among those
whose known-class accuracy is not below the fine-tuned embedding's. Writes reports/joint_share.{json,md}
(--report NAME: reports/NAME.*).
"""

import argparse
import json

import numpy as np
import torch
from _data import REPORTS, ROOT, require_data
from enrol_bench import PAIRS

from core.activity import ActivityConfig, voting_windows
from core.clip import prepare
from core.features import FrontendConfig
from training.data import scan_labeled
from training.run import load_inference_model

DRAWS, SHOTS = 20, 5


@torch.no_grad()
def window_means(run, paths, pretrained=None) -> tuple[np.ndarray, np.ndarray]:
    """Per clip, the mean over its windows with sound of the fine-tuned (N, D) and the pre-trained
    (N, D') L2-normalised window embeddings."""
    net, info = load_inference_model(run, 0.5, pretrained)  # any share: both encoders
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    own, pre = [], []
    for path in paths:
        clip = prepare(path, frontend, activity)
        keep = voting_windows(clip.active)
        x = torch.from_numpy(clip.patches[keep])[:, None]
        own.append(net.fine_tuned(x)[1].mean(dim=0).numpy())
        pre.append(torch.nn.functional.normalize(net.pretrained(x), dim=1).mean(dim=0).numpy())
    return np.stack(own), np.stack(pre)


def joint(own: np.ndarray, pre: np.ndarray, share: float) -> np.ndarray:
    """(N, D), (N, D') window means -> (N, D + D') clip embeddings as served at `share`."""
    x = np.hstack([np.sqrt(1 - share) * own, np.sqrt(share) * pre])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def enrol(x, labels, folds, pair, rng) -> tuple[float, float]:
    """One draw: (left-out clips named right, known fold-4 clips named right) by the nearest prototype."""
    known = sorted(set(labels) - set(pair))
    shots = {c: rng.choice(np.flatnonzero(labels == c), SHOTS, replace=False) for c in pair}
    names = np.array(known + list(pair))
    prototypes = np.stack([x[(labels == c) & (folds != 4)].mean(axis=0) for c in known]
                          + [x[i].mean(axis=0) for i in shots.values()])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
    left = np.setdiff1d(np.flatnonzero(np.isin(labels, pair)), np.concatenate(list(shots.values())))
    held = np.flatnonzero(~np.isin(labels, pair) & (folds == 4))
    return tuple(float((names[(x[i] @ prototypes.T).argmax(axis=1)] == labels[i]).mean()) for i in (left, held))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", default="ssl-acl-rc-acl-robust-oe-eq")
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 1.0])
    parser.add_argument("--pretrained", help="join this pre-training run's encoder (runs/pretrain/NAME) instead of each "
                        "run's own init")
    parser.add_argument("--report", default="joint_share", help="reports/REPORT.json and .md")
    args = parser.parse_args()
    clips, _ = scan_labeled(require_data("esc10"))
    labels, folds = np.array([c.label for c in clips]), np.array([c.fold for c in clips])
    results = {s: {"left_out": [], "known": []} for s in args.shares}
    for pair in PAIRS:
        run = ROOT / "runs" / f"leaveout-{args.arm}-{'-'.join(pair)}"
        if not (run / "checkpoint").is_dir():
            raise SystemExit(f"{run} is missing: run benchmarks/enrol_bench.py --arm {args.arm} first")
        own, pre = window_means(run, [c.path for c in clips], args.pretrained)
        for share in args.shares:
            rng = np.random.default_rng(0)
            draws = np.array([enrol(joint(own, pre, share), labels, folds, pair, rng) for _ in range(DRAWS)])
            results[share]["left_out"].append(float(draws[:, 0].mean()))
            results[share]["known"].append(float(draws[:, 1].mean()))
    mean = {s: {k: float(np.mean(v)) for k, v in r.items()} for s, r in results.items()}
    allowed = [s for s in args.shares if mean[s]["known"] >= mean[0.0]["known"]] if 0.0 in mean else args.shares
    chosen = max(allowed, key=lambda s: mean[s]["left_out"])
    encoder = f"; pre-trained encoder {args.pretrained}" if args.pretrained else ""
    lines = [f"Recipe `{args.arm}`, its five leave-out runs{encoder}; {SHOTS}-shot prototypes of the two left-out classes beside "
             "the eight known ones, nearest prototype (20 draws).", "",
             "| pre-trained share | left-out clips named | known classes, fold 4 | per pair (left-out) |", "|---|---|---|---|"]
    lines += [f"| {s:g}{' (chosen)' if s == chosen else ''} | {mean[s]['left_out']:.1%} | {mean[s]['known']:.1%} | "
              + " / ".join(f"{v:.0%}" for v in results[s]["left_out"]) + " |" for s in args.shares]
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"{args.report}.json").write_text(json.dumps({"arm": args.arm, "pretrained": args.pretrained, "pairs": PAIRS,
                                                             "chosen": chosen,
                                                             "results": {str(s): r for s, r in results.items()}}, indent=1))
    (REPORTS / f"{args.report}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
