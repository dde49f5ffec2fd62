"""Few-shot enrolment of classes the model never saw: leave two ESC-10 classes out of training,
enrol them from 1 or 5 clips each, and classify their remaining clips among all ten classes.

    python benchmarks/enrol_bench.py [--arm ssl-acl-acl-robust] [--leave-out crying_baby helicopter] [--draws 20] [--seed 0]
                                     [--pretrained-share 0.75 [--pretrained runs/pretrain/NAME]] [--prototype-weight W]
                                     [--vote amplitude]

Without --leave-out, all five disjoint pairs of ESC-10 classes (PAIRS), one after the other.
1) Trains the recipe (a CV arm of benchmarks/cv_study.py; without --arm, configs/default-model.yaml
   with cross-entropy, the first recipe measured this way) on the other eight classes, folds 1-3
   (validation fold 4), seed `--seed`, in runs/leaveout[-<arm>]-<classes>[-seed<N>] (resumable), and exports it
   with its class prototypes (training clips); with --pretrained-share, with the joint embedding
   (training.model.InferenceModel: the same run, its pre-trained encoder beside it, or --pretrained).
2) For each shot count and `--draws` random draws: enrols the left-out classes through
   core.classes (the code behind POST /classes) and classifies the left-out classes' remaining
   clips (folds 1-4 less the enrolment clips) and the eight known classes' fold-4 clips (to show
   what enrolment costs them) two ways: by cosine to every prototype (what the embedding allows),
   and as the service answers (core.answer on the clip's windows and levels: enrolled classes on the head's
   scale, the windows voting by --vote, the open set off) at each enrolment margin of MARGINS.
3) Retrieval among the left-out classes' clips: each queries the others (P@1, mAP by cosine).
Writes reports/enrol_bench[_<arm>]_<classes>[_seed<N>][_share<S>[-NAME]][_w<W>][_<vote>].json and, for --arm, a
table over the pairs in reports/enrol_bench_<arm>[...].md (seed 0 and the mean vote keep the names without the suffix).
"""

import argparse
import csv
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
from _data import REPORTS, ROOT, add_joint_arguments, encoder_tag, joint_arguments, require_data
from cv_study import ARMS, pretrain_for
from embedding_cv import retrieval

from core.activity import voting_windows
from core.answer import AnswerOptions, answer, clip_embedding
from core.artifact import load_artifact
from core.classes import ClassSet
from core.clip import prepare
from core.openset import VOTES
from core.runtime import RuntimeConfig, create_runtime
from export.onnx_export import export_artifact
from export.open_set import attach_open_set
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


MARGINS = (-0.05, -0.03, -0.02, -0.01, 0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)  # core.answer's enrolment margin (shipped: 0)
PAIRS = [("crying_baby", "helicopter"), ("rooster", "sea_waves"), ("dog", "chainsaw"), ("rain", "sneezing"),
         ("crackling_fire", "clock_tick")]  # every ESC-10 class left out once


def train(data, run, arm: str | None, seed: int):
    sets = ["train_folds=[1,2,3]", "val_folds=[4]", *(ARMS[arm] if arm else ["loss=ce"])]
    cmd = [sys.executable, "-m", "soundarc.cli", "train", "finetune", "--config", "configs/default-model.yaml",
           *(a for s in sets for a in ("--set", s)), "--set", f"seed={seed}", "--set", f"labeled={data.relative_to(ROOT)}",
           "--out", str(run)]
    subprocess.run(cmd, check=True, cwd=ROOT)


def predict(classes: ClassSet, embeddings: np.ndarray) -> np.ndarray:
    """(N, D) clip embeddings -> (N,) label of the nearest prototype."""
    return np.array([classes.nearest(e)[0] for e in embeddings])


def clip_outputs(runtime, paths: list) -> list[tuple[np.ndarray, np.ndarray, object]]:
    """Per file (logits (N, C), embeddings (N, D) of every window, its core.clip.PreparedClip), as the service has them."""
    out = []
    for path in paths:
        clip = prepare(path, runtime.artifact.frontend, runtime.artifact.activity)
        out.append((*runtime.run(clip.patches), clip))
    return out


def answered(classes: ClassSet, outputs: list, artifact) -> np.ndarray:
    """Per clip its clip_outputs -> (N,) the service's closed-set label (core.answer, the model's vote)."""
    frontend = artifact.frontend
    return np.array([answer(lg, e, clip.active, clip.starts_s, frontend.patch_seconds, artifact.labels, classes,
                            AnswerOptions(open_set=False), clip.levels, frontend, clip.duration_s).label
                     for lg, e, clip in outputs])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--arm", choices=list(ARMS), help="the recipe (default: cross-entropy, the default config)")
    parser.add_argument("--leave-out", nargs=2, help="one pair (default: all of PAIRS)")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="the fine-tune's seed (the draws keep theirs)")
    add_joint_arguments(parser, "export with the joint embedding (the same runs; export --pretrained-share)")
    parser.add_argument("--prototype-weight", type=float, default=0.0,
                        help="the built-in classes ranked with this prototype weight (export --prototype-weight)")
    parser.add_argument("--vote", choices=VOTES, default="mean", help="how a clip's windows vote (export --vote)")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    if args.arm and "{fold}" in " ".join(ARMS[args.arm]):
        parser.error(f"{args.arm} pre-trains on the training folds' audio, the left-out classes' too: no fair leave-out")
    if args.arm:
        pretrain_for(args.arm, fold=4, threads=2)
    pairs = [args.leave_out] if args.leave_out else PAIRS
    reports = [measure(args.arm, list(pair), args.shots, args.draws, args.seed, share, pretrained, args.prototype_weight,
                       args.vote) for pair in pairs]
    if args.arm and not args.leave_out and {1, 5} <= set(args.shots):  # the table's columns
        text = table(args.arm, reports, args.seed)
        suffix = (f"{seed_suffix(args.seed, '_')}{share_suffix(share, pretrained)}{weight_suffix(args.prototype_weight)}"
                  f"{vote_suffix(args.vote)}")
        (REPORTS / f"enrol_bench_{args.arm}{suffix}.md").write_text(text)
        print(text)


def seed_suffix(seed: int, sep: str) -> str:
    """'' for seed 0 (the names runs and reports had before --seed), else e.g. '-seed1'."""
    return f"{sep}seed{seed}" if seed else ""


def share_suffix(share: float, pretrained: str | None = None) -> str:
    """'' for the fine-tuned embedding alone, else e.g. '_share0.75' (joined with the run's own pre-trained
    encoder) or '_share0.75-ssl-acl-rc' (with runs/pretrain/ssl-acl-rc)."""
    return f"_share{share:g}{encoder_tag(pretrained)}" if share else ""


def weight_suffix(weight: float) -> str:
    """'' for the head alone, else e.g. '_w0.75'."""
    return f"_w{weight:g}" if weight else ""


def enrolled_draw(artifact, embeddings: np.ndarray, labels: np.ndarray, leave_out: list[str], shots: int, rng
                  ) -> tuple[ClassSet, np.ndarray]:
    """One draw: the model's classes with each left-out class enrolled from `shots` random clips of it (their (N, D)
    clip embeddings), and the indices of the left-out classes' other clips, to be answered."""
    classes = ClassSet.of(artifact)
    enrolled = {c: rng.choice(np.flatnonzero(labels == c), shots, replace=False) for c in leave_out}
    for c, idx in enrolled.items():
        classes = classes.enrol(c, embeddings[idx])
    return classes, np.setdiff1d(np.flatnonzero(np.isin(labels, leave_out)), np.concatenate(list(enrolled.values())))


def vote_suffix(vote: str) -> str:
    """'' for the mean vote (the reports before --vote), else e.g. '_amplitude'."""
    return "" if vote == "mean" else f"_{vote}"


def measure(arm: str | None, leave_out: list[str], shots_list: list[int], draws: int, seed: int,
            share: float = 0.0, pretrained: str | None = None, prototype_weight: float = 0.0, vote: str = "mean") -> dict:
    esc = require_data("esc10")
    data = ROOT / "cache" / ("leaveout-" + "-".join(leave_out))
    run = ROOT / "runs" / ("leaveout-" + (f"{arm}-" if arm else "") + "-".join(leave_out) + seed_suffix(seed, "-"))
    write_subset(esc, leave_out, data)
    train(data, run, arm, seed)
    model = export_artifact(run, ROOT / "reports" / "tmp" / f"{run.name}{share_suffix(share, pretrained)}-model",
                            pretrained_share=share, pretrained=pretrained)
    attach_open_set(model, str(data), (1, 2, 3), prototype_weight=prototype_weight, vote=vote)
    artifact = load_artifact(model)
    runtime = create_runtime(artifact, RuntimeConfig("cpu"))
    clips, _ = scan_labeled(esc)
    outputs = clip_outputs(runtime, [c.path for c in clips])  # every ESC-10 clip once
    embeddings = np.stack([clip_embedding(e[voting_windows(clip.active)]) for _, e, clip in outputs])  # (N, D)
    labels = np.array([c.label for c in clips])
    folds = np.array([c.fold for c in clips])
    known_val = np.flatnonzero(~np.isin(labels, leave_out) & (folds == 4))
    left_out = np.flatnonzero(np.isin(labels, leave_out))
    p1, mean_ap = retrieval(embeddings[left_out], labels[left_out])

    rng = np.random.default_rng(0)
    results = {}
    for shots in shots_list:
        new_acc, known_acc, per_class = [], [], {c: [] for c in leave_out}
        served = {m: ([], []) for m in MARGINS}  # margin -> (left-out, known) accuracies as answered
        for _ in range(draws):
            classes, test = enrolled_draw(artifact, embeddings, labels, leave_out, shots, rng)
            predicted = predict(classes, embeddings[test])
            new_acc.append(float((predicted == labels[test]).mean()))
            for c in leave_out:
                mask = labels[test] == c
                per_class[c].append(float((predicted[mask] == c).mean()))
            known_acc.append(float((predict(classes, embeddings[known_val]) == labels[known_val]).mean()))
            for margin, (new, known) in served.items():
                at_margin = replace(classes, builtin=replace(classes.builtin, enrol_margin=margin))
                for idx, accs in ((test, new), (known_val, known)):
                    accs.append(float((answered(at_margin, [outputs[i] for i in idx], artifact) == labels[idx]).mean()))
        results[f"{shots}-shot"] = {
            "left_out_accuracy_mean": float(np.mean(new_acc)), "left_out_accuracy_std": float(np.std(new_acc)),
            "per_class_mean": {c: float(np.mean(v)) for c, v in per_class.items()},
            "known_fold4_accuracy_mean": float(np.mean(known_acc)), "known_fold4_accuracy_std": float(np.std(known_acc)),
            "as_answered": {str(m): {"left_out_accuracy_mean": float(np.mean(new)),
                                     "known_fold4_accuracy_mean": float(np.mean(known))} for m, (new, known) in served.items()}}
    base_pred = predict(ClassSet.of(artifact), embeddings[known_val])
    head_pred = answered(ClassSet.of(artifact), [outputs[i] for i in known_val], artifact)
    report = {"arm": arm or "ce (configs/default-model.yaml)", "leave_out": leave_out, "seed": seed, "pretrained_share": share,
              "pretrained": pretrained, "prototype_weight": prototype_weight, "vote": vote,
              "run": str(run.relative_to(ROOT)),
              "draws": draws, "classes_total": len(artifact.labels) + len(leave_out), "chance": 1 / (len(artifact.labels) + 2),
              "known_fold4_accuracy_prototypes_only_builtins": float((base_pred == labels[known_val]).mean()),
              "known_fold4_accuracy_answered_none_enrolled": float((head_pred == labels[known_val]).mean()),
              "left_out_retrieval": {"p_at_1": p1, "map": mean_ap, "clips": len(left_out)},
              "results": results}
    REPORTS.mkdir(exist_ok=True)
    suffix = f"{seed_suffix(seed, '_')}{share_suffix(share, pretrained)}{weight_suffix(prototype_weight)}{vote_suffix(vote)}"
    name = f"enrol_bench_{f'{arm}_' if arm else ''}{'-'.join(leave_out)}{suffix}.json"
    (REPORTS / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2), flush=True)
    return report


def table(arm: str, reports: list[dict], seed: int) -> str:
    """A row per left-out pair and their mean: 1/5-shot accuracy on the left-out classes, retrieval among them."""
    rows = [(" + ".join(r["leave_out"]), r["results"]["1-shot"]["left_out_accuracy_mean"],
             r["results"]["5-shot"]["left_out_accuracy_mean"], r["left_out_retrieval"]["p_at_1"],
             r["left_out_retrieval"]["map"], r["known_fold4_accuracy_prototypes_only_builtins"]) for r in reports]
    rows.append(("mean", *(float(np.mean([row[i] for row in rows])) for i in range(1, 6))))
    share, encoder = reports[0]["pretrained_share"], reports[0]["pretrained"]
    joint = f", joint embedding (pre-trained share {share:g}{f', encoder {encoder}' if encoder else ''})" if share else ""
    weight = reports[0].get("prototype_weight", 0.0)
    joint += f", built-in classes at prototype weight {weight:g}" if weight else ""
    lines = [f"Recipe `{arm}`, trained without the pair (folds 1-3, seed {seed}){joint}; 10-way nearest prototype.", "",
             "| left out | 1-shot | 5-shot | retrieval P@1 | retrieval mAP | known classes, fold 4 |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {a:.1%} | {b:.1%} | {c:.3f} | {d:.3f} | {e:.1%} |" for n, a, b, c, d, e in rows]
    for shots in ("1-shot", "5-shot"):
        served = [(" + ".join(r["leave_out"]), r["known_fold4_accuracy_answered_none_enrolled"],
                   *(r["results"][shots]["as_answered"][str(m)][k] for m in MARGINS
                     for k in ("left_out_accuracy_mean", "known_fold4_accuracy_mean"))) for r in reports]
        served.append(("mean", *(float(np.mean([row[i] for row in served])) for i in range(1, len(served[0])))))
        lines += ["", f"{shots}, as the service answers (core.answer, the open set off, the {reports[0].get('vote', 'mean')} "
                  "vote): left-out clips recognised / known classes' fold 4, at each enrolment margin.", "",
                  "| left out | known, none enrolled | " + " | ".join(f"margin {m}" for m in MARGINS) + " |",
                  "|---|---|" + "---|" * len(MARGINS)]
        lines += [f"| {row[0]} | {row[1]:.1%} | " + " | ".join(f"{row[i]:.1%} / {row[i + 1]:.1%}"
                                                             for i in range(2, len(row), 2)) + " |" for row in served]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
