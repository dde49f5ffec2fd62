"""The int8 variant's accuracy by cross-validation (issue 17): for each CV run of a recipe
(benchmarks/cv_study.py), export its checkpoint as it would be served (the joint embedding of
--pretrained-share, its built-in prototypes and open set from its own training folds, the head blended
with the prototypes at --prototype-weight), quantize it with ranges from those training folds (never the
held-out fold), and score the held-out fold with fp32 and with int8 through core.answer.

    python benchmarks/int8_cv.py [--arm acl-robust[:SEEDS]] [--pretrained-share S [--pretrained RUN]]
        [--prototype-weight W] [--vote mean|amplitude] [--setting shipped]

Per run: clip accuracy fp32 and int8, window top-1 agreement (of the head), embedding cosine, clip label,
first-ranked class and unknown agreement, the model's time per window (batch of 64; run it alone). The
contract of `soundarc quantize` asks for an accuracy drop <= 0.5 point.
--setting: the quantizer's settings (SETTINGS; `shipped`: export.quantize's defaults); --vote: how a clip's
windows vote, as the model's openset.json says (the answers use the clips' levels, as served). Writes
reports/int8_cv.json (another setting or vote: reports/int8_cv[_<setting>][_<vote>].json).
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from _data import REPORTS, add_joint_arguments, fold_of, group_runs_of, joint_arguments, require_data, training_clips
from int8_speed import ms_per_window

from core.artifact import load_artifact
from core.clip import prepare
from core.openset import VOTES
from core.runtime import RuntimeConfig, create_runtime
from export.onnx_export import export_artifact
from export.open_set import attach_open_set
from export.quantize import INT8_FILE, calibration_windows, quantize_model, validate, with_variant
from training.data import scan_labeled

SETTINGS = {"shipped": {},  # the stem convolutions fp32, 7-bit weights
            "8-bit-weights": {"reduce_range": False},
            "stem-int8": {"stem_fp32": False},
            "all-int8-8-bit-weights": {"stem_fp32": False, "reduce_range": False}}  # the quantizer before


def evaluate_run(run: Path, fold: int, clips: list, out: Path, share: float, pretrained: str | None,
                 weight: float, setting: dict, vote: str) -> dict:
    export_artifact(run, out, pretrained_share=share, pretrained=pretrained)
    train_folds = tuple(sorted({c.fold for c in clips} - {fold}))
    attach_open_set(out, str(require_data("esc10")), train_folds, prototype_weight=weight, vote=vote)
    artifact = load_artifact(out)
    prepared = {c.path: prepare(c.path, artifact.frontend, artifact.activity) for c in clips}
    calibration = calibration_windows([prepared[c.path] for c in training_clips(clips, fold)])
    quantize_model(artifact.model_path, out / INT8_FILE, calibration, **setting)
    int8 = create_runtime(with_variant(artifact, out / INT8_FILE), RuntimeConfig(device="cpu", precision="int8"))
    fp32 = create_runtime(artifact, RuntimeConfig(device="cpu", precision="fp32"))
    held = [c for c in clips if c.fold == fold]
    result = validate(fp32, int8, [prepared[c.path] for c in held], [c.label for c in held])
    return {**result, "ms_per_window_fp32": ms_per_window(fp32, calibration[:64], 64),
            "ms_per_window_int8": ms_per_window(int8, calibration[:64], 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", default="acl-robust", help="ARM or ARM:SEED,SEED")
    add_joint_arguments(parser, "serve each run with the joint embedding, this share of the cosine its "
                        "pre-trained encoder's")
    parser.add_argument("--prototype-weight", type=float, default=0.0,
                        help="the head blended with the prototypes, as served (core.answer.class_logits)")
    parser.add_argument("--setting", choices=SETTINGS, default="shipped")
    parser.add_argument("--vote", choices=VOTES, default="mean")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    clips, _ = scan_labeled(require_data("esc10"))
    _, runs = group_runs_of(args.arm)
    results = {}
    for run in runs:
        with tempfile.TemporaryDirectory() as tmp:
            results[run.name] = evaluate_run(run, fold_of(run), clips, Path(tmp) / "artifact", share, pretrained,
                                             args.prototype_weight, SETTINGS[args.setting], args.vote)
        print(run.name, json.dumps(results[run.name]), flush=True)
    drops = [100 * (r["accuracy_fp32"] - r["accuracy_int8"]) for r in results.values()]
    served = {"arm": args.arm, "pretrained_share": share, "pretrained": pretrained,
              "prototype_weight": args.prototype_weight, "setting": args.setting, "vote": args.vote}
    summary = {**served, "runs": len(results),
               "accuracy_fp32_mean": float(np.mean([r["accuracy_fp32"] for r in results.values()])),
               "accuracy_int8_mean": float(np.mean([r["accuracy_int8"] for r in results.values()])),
               "drop_points_mean": float(np.mean(drops)), "drop_points_max": float(np.max(drops)),
               "window_top1_agreement_min": min(r["window_top1_agreement"] for r in results.values()),
               "embedding_cosine_p01_min": min(r["embedding_cosine_p01"] for r in results.values()),
               "clip_label_agreement_min": min(r["clip_label_agreement"] for r in results.values()),
               "clip_unknown_agreement_min": min(r["clip_unknown_agreement"] for r in results.values()),
               "clips_first_class_changed": int(sum(round((1 - r["clip_top1_agreement"]) * r["clips"])
                                                    for r in results.values())),
               "ms_per_window_fp32_median": float(np.median([r["ms_per_window_fp32"] for r in results.values()])),
               "ms_per_window_int8_median": float(np.median([r["ms_per_window_int8"] for r in results.values()]))}
    REPORTS.mkdir(exist_ok=True)
    name = "_".join(["int8_cv", *([args.setting] if args.setting != "shipped" else []),
                     *([args.vote] if args.vote != "mean" else [])])
    (REPORTS / f"{name}.json").write_text(json.dumps({**served, "summary": summary, "runs": results}, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
