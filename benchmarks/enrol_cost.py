"""What enrolled classes cost the built-in ones (issue 20), on the runs of benchmarks/cv_study.py.

    python benchmarks/enrol_cost.py --arm ce-robust [--pretrained-share S [--pretrained runs/pretrain/NAME]]
        [--prototype-weight W] [--vote amplitude]

Per CV run: the built-in prototypes and the cosine→logit line (a, b) come from its training folds,
as `soundarc export --open-set` makes them. Seven classes are enrolled from 5 example clips each,
taken from unlabeled/ (game sounds: horse, elephant, goat, cattle, and three ambiences: trade, port,
farm); with --shots N, from the first N of them (the same clips after the fifth answered). Then the held-out
fold is answered three ways: no enrolled class (the built-in classes as served), the
enrolled classes on the head's scale (core.answer, what ships), and every class by cosine to its
prototype (what shipped before); the head-scale rule at several margins (core.openset.enrol_margin); with
--clip-gate, also by the clip gate (core.answer.clip_gate: an enrolled class wherever the clip embedding is closer to its
prototype, by the margin, than to every other prototype; at margin 0 its nearest).
Also: the enrolled classes' own left-over clips, recognised as their class. With --pretrained-share,
every run is served with the joint embedding (training.model.InferenceModel); with --prototype-weight,
its built-in classes are ranked by the head blended with their prototypes (core.answer, benchmarks/fusion_cv.py);
with --vote, a clip's windows vote so (core.answer.vote_weights).
Writes reports/enrol_cost.json (--report: another name).
"""

import argparse
import json
import re
import sys
from dataclasses import replace

import numpy as np
import torch
from _data import REPORTS, add_joint_arguments, cv_runs, fold_of, joint_arguments, require_data, training_clips

from core.activity import ActivityConfig
from core.answer import AnswerOptions, answer
from core.classes import ClassSet
from core.clip import prepare
from core.features import FrontendConfig
from core.openset import VOTES, OpenSet
from export.open_set import fit_builtin
from training.data import find_audio, scan_labeled
from training.run import load_inference_model

GROUPS = {"horse": r"animal_horse", "elephant": r"animal_elephant", "goat": r"death_goat", "cattle": r"animal_cattle",
          "trade": r"amb_trade", "port": r"amb_port", "farm": r"amb_farm"}
SHOTS = 5
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1)


@torch.no_grad()
def windows(model, path, frontend, activity):
    """(logits (N, C), L2-normalised embeddings (N, D), clip) of one file, as the service computes them."""
    clip = prepare(path, frontend, activity)
    logits, embeddings = model(torch.from_numpy(clip.patches)[:, None])
    return logits.numpy(), embeddings.numpy(), clip


def run_one(run_dir, fold, esc10, unlabeled, margins=MARGINS, pretrained_share=0.0, pretrained=None,
            prototype_weight=0.0, vote="mean", n_shots=SHOTS, clip_gate=False) -> dict:
    model, info = load_inference_model(run_dir, pretrained_share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    clips, names = scan_labeled(esc10)
    index = {n: i for i, n in enumerate(names)}
    train = training_clips(clips, fold)
    held = [c for c in clips if c.fold == fold]
    outs = [windows(model, c.path, frontend, activity) for c in train]
    active = [(lg[k.active], e[k.active]) for lg, e, k in outs]
    _, prototypes, line = fit_builtin(active, np.array([index[c.label] for c in train]), len(names))
    open_set = OpenSet(prototypes, names, np.pi, 0.0, "none", line, prototype_weight=prototype_weight, vote=vote)
    builtin = ClassSet(open_set)

    audio = find_audio(unlabeled)
    enrolled, leftover = builtin, []
    for label, pattern in GROUPS.items():
        members = [p for p in audio if re.search(pattern, p.name)]
        shots = [windows(model, p, frontend, activity) for p in members[:n_shots]]
        enrolled = enrolled.enrol(label, np.stack([_unit(e[k.active].mean(axis=0)) for _, e, k in shots]))
        leftover += [(label, p) for p in members[SHOTS:]]  # the same clips answered whatever n_shots

    cache = {}

    def top1(classes, path, cosine=False):
        if path not in cache:
            cache[path] = windows(model, path, frontend, activity)
        lg, e, k = cache[path]
        if cosine:  # every class by cosine to its prototype
            return classes.labels[int(np.argmax(classes.cosines(_unit(e[k.active].mean(axis=0))[None])[0]))]
        return answer(lg, e, k.active, k.starts_s, 1.0, names, classes, AnswerOptions(open_set=False), k.levels,
                      frontend).label

    truth = [c.label for c in held]
    result = {"run": run_dir.name, "fold": fold, "cosine_logit": list(open_set.cosine_logit),
              "built-in, none enrolled": float(np.mean([top1(builtin, c.path) == t for c, t in zip(held, truth)])),
              "built-in, all cosine": float(np.mean([top1(enrolled, c.path, True) == t for c, t in zip(held, truth)])),
              "enrolled recognised, all cosine": float(np.mean([top1(enrolled, p, True) == g for g, p in leftover]))}
    for margin in margins:
        classes = replace(enrolled, builtin=replace(open_set, enrol_margin=margin))
        result[f"built-in, margin {margin}"] = float(np.mean([top1(classes, c.path) == t for c, t in zip(held, truth)]))
        result[f"enrolled recognised, margin {margin}"] = float(np.mean([top1(classes, p) == g for g, p in leftover]))
        if clip_gate:  # the same classes answered by core.answer's clip gate as well
            by_clips = replace(classes, builtin=replace(classes.builtin, enrol_gate="clip"))
            result[f"built-in, clip gate, margin {margin}"] = float(np.mean([top1(by_clips, c.path) == t
                                                                             for c, t in zip(held, truth)]))
            result[f"enrolled recognised, clip gate, margin {margin}"] = float(np.mean(
                [top1(by_clips, p) == g for g, p in leftover]))
    result["leftover clips"] = len(leftover)
    return result


def _unit(x):
    return x / np.linalg.norm(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--margins", type=float, nargs="+", default=list(MARGINS))
    parser.add_argument("--clip-gate", action="store_true", help="also: the clip gate (core.answer.clip_gate: an "
                        "enrolled class wherever the clip embedding is closer to its prototype by the margin than to every "
                        "other) at each margin")
    parser.add_argument("--shots", type=int, choices=range(1, SHOTS + 1), default=SHOTS,
                        help="each class enrolled from its first SHOTS clips (the clips after the fifth are answered)")
    add_joint_arguments(parser, "serve each run with the joint embedding")
    parser.add_argument("--prototype-weight", type=float, default=0.0, help="the built-in classes' prototype weight")
    parser.add_argument("--vote", choices=VOTES, default="mean", help="how a clip's windows vote")
    parser.add_argument("--report", default="enrol_cost", help="reports/REPORT.json (finalise_default.py reads "
                        "enrol_cost: another machine's draw or another rule, its own name)")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    esc10, unlabeled = require_data("esc10"), require_data("unlabeled")
    runs = cv_runs(args.arm, args.seed)
    if not runs:
        sys.exit(f"no finished runs in runs/cv/{args.arm}")
    results = [run_one(r, fold_of(r), esc10, unlabeled, args.margins, share, pretrained, args.prototype_weight, args.vote,
                       args.shots, args.clip_gate) for r in runs]
    keys = [k for k in results[0] if isinstance(results[0][k], float)]
    summary = {k: {"mean": float(np.mean([r[k] for r in results])), "std": float(np.std([r[k] for r in results]))}
               for k in keys}
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"{args.report}.json").write_text(json.dumps({"arm": args.arm, "pretrained_share": share,
                                                         "pretrained": pretrained,
                                                         "prototype_weight": args.prototype_weight, "vote": args.vote,
                                                         "groups": GROUPS, "shots": args.shots,
                                                         # which clip gate: core.answer's, where the margin holds too
                                                         **({"clip_gate": "core.answer"} if args.clip_gate else {}),
                                                         "summary": summary, "runs": results}, indent=1))
    for k, v in summary.items():
        print(f"{k}: {100 * v['mean']:.1f} ± {100 * v['std']:.1f}")


if __name__ == "__main__":
    main()
