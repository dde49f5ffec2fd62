"""The quality study of issue 7: cross-entropy vs supervised ACL, InfoNCE vs ACL pre-training
(then linear probe and fine-tune), 3 seeds each, train folds 1-3 / validate fold 4.

    python benchmarks/study.py [--seeds 0 1 2] [--only ARM...]

Every run is one `soundarc train ...` command (printed, and listed in reports/study.json); a run
whose eval.json exists is skipped and an interrupted one resumes, so rerunning continues the study.
Writes reports/study.json, reports/study.md and reports/study/*.png.
"""

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from _data import REPORTS, ROOT, require_data

RUNS = ROOT / "runs" / "study"
ESC10 = require_data("esc10")
SUPERVISED = "configs/study-supervised.yaml"
PRETRAIN = "configs/study-pretrain.yaml"
PROBE = ["probe=true", "probe_epochs=300", "lr=0.01"]

# arm -> (mode, config, overrides, pre-training arm it starts from or None)
ARMS = {
    "sup-ce": ("finetune", SUPERVISED, ["loss=ce"], None),
    "sup-acl-a0.5": ("finetune", SUPERVISED, ["loss=acl", "sup_alpha=0.5"], None),
    "sup-acl-a0.7": ("finetune", SUPERVISED, ["loss=acl", "sup_alpha=0.7"], None),
    "ssl-infonce": ("pretrain", PRETRAIN, ["ssl_alpha=1.0"], None),
    "ssl-acl-a0.3": ("pretrain", PRETRAIN, ["ssl_alpha=0.3"], None),
    "ssl-infonce+probe": ("finetune", SUPERVISED, PROBE, "ssl-infonce"),
    "ssl-acl-a0.3+probe": ("finetune", SUPERVISED, PROBE, "ssl-acl-a0.3"),
    "ssl-infonce+ft": ("finetune", SUPERVISED, ["loss=ce"], "ssl-infonce"),
    "ssl-acl-a0.3+ft": ("finetune", SUPERVISED, ["loss=ce"], "ssl-acl-a0.3"),
}
# The configs name ../shared/data; these follow SOUNDARC_DATA (benchmarks/_data.py) instead.
DATA_SETS = {SUPERVISED: [f"labeled={ESC10}"], PRETRAIN: [f"labeled={ESC10}", f"unlabeled=[{require_data('unlabeled')}]"]}
METRICS = ("clip_accuracy", "balanced_accuracy", "patch_accuracy", "uniformity", "tolerance", "knn_accuracy")


def command(arm: str, seed: int) -> list[str]:
    mode, config, overrides, base = ARMS[arm]
    sets = [*DATA_SETS[config], *overrides, f"seed={seed}"] + ([f"init={RUNS / base / f'seed{seed}'}"] if base else [])
    return ["soundarc", "train", mode, "--config", config, *(a for s in sets for a in ("--set", s)),
            "--out", str(RUNS / arm / f"seed{seed}")]


def run_arm(arm: str, seed: int) -> dict:
    out = RUNS / arm / f"seed{seed}"
    if not (out / "eval.json").exists():
        for cmd in (command(arm, seed), ["soundarc", "train", "eval", str(out)]):
            print("$", " ".join(cmd), flush=True)
            subprocess.run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]], cwd=ROOT, check=True,
                           stdout=subprocess.DEVNULL)
    result = json.loads((out / "eval.json").read_text())
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    knn = [r["knn_accuracy"] for r in history if "knn_accuracy" in r]
    result["knn_accuracy"] = knn[-1] if knn else None
    result["command"] = " ".join(command(arm, seed))
    return result


def summarise(results: dict) -> dict:
    table = {}
    for arm, per_seed in results.items():
        if not per_seed:
            continue
        row = {}
        for metric in METRICS:
            values = [r[metric] for r in per_seed.values() if r.get(metric) is not None]
            if values:
                row[metric] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
        table[arm] = row
    return table


def markdown(table: dict) -> str:
    lines = ["| arm | clip acc. | balanced acc. | patch acc. | kNN acc. | uniformity | tolerance | seeds |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, row in table.items():
        cells = [_cell(row, m) for m in ("clip_accuracy", "balanced_accuracy", "patch_accuracy", "knn_accuracy")]
        cells += [_cell(row, m, percent=False) for m in ("uniformity", "tolerance")]
        n = max((v["n"] for v in row.values()), default=0)
        lines.append(f"| {arm} | {' | '.join(cells)} | {n} |")
    return "\n".join(lines) + "\n"


def _cell(row: dict, metric: str, percent: bool = True) -> str:
    if metric not in row:
        return "—"
    s = row[metric]
    return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}" if percent else f"{s['mean']:.3f} ± {s['std']:.3f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--only", nargs="+", choices=list(ARMS), default=list(ARMS))
    args = parser.parse_args()
    results = {arm: {} for arm in args.only}
    for seed in args.seeds:  # seed-major: the first seed of every arm finishes first
        for arm in args.only:
            results[arm][seed] = run_arm(arm, seed)
            report(results)


def report(results: dict) -> None:
    table = summarise(results)
    out = REPORTS / "study"
    out.mkdir(parents=True, exist_ok=True)
    (REPORTS / "study.json").write_text(json.dumps({"summary": table, "runs": results}, indent=2) + "\n")
    (REPORTS / "study.md").write_text(markdown(table))
    for arm, per_seed in results.items():  # plots of each arm's first seed
        if not per_seed:
            continue
        seed = min(per_seed)
        for plot in (RUNS / arm / f"seed{seed}" / "plots").glob("*.png"):
            shutil.copy(plot, out / f"{arm}-{plot.name}")
    print(markdown(table), flush=True)


if __name__ == "__main__":
    main()
