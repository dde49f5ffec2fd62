"""Export the final default run and record in its manifest what the shipped model is.

    python benchmarks/finalise_default.py FINAL_RUN ARM OUT_DIR

The artifact gets the open set (prototypes from its training clips, the threshold from the
cross-validation of its recipe: reports/openset_cv.json), the sound-event parameters chosen by
cross-validation (reports/events_cv.json) and a `default_model` section: data,
recipe, commands, and the recipe's cross-validated figures (reports/cv_study.json), clean and
under the recording conditions. The final run trains on all four folds, so it has no validation of
its own: the recipe's CV figures stand for it.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

from core.artifact import MANIFEST_FILE, load_artifact, sha256_file, write_json_atomic
from export.onnx_export import export_artifact, smoke_test
from export.open_set import attach_open_set, save_open_set

ROOT = Path(__file__).resolve().parents[1]


def enrol_margin(arm: str, max_cost: float = 0.02) -> float:
    """The smallest margin whose enrolled classes cost the built-in ones at most `max_cost` of
    accuracy (reports/enrol_cost.json of benchmarks/enrol_cost.py, the rule of BENCHMARKS.md)."""
    report = json.loads((ROOT / "reports" / "enrol_cost.json").read_text())
    if report["arm"] != arm:
        sys.exit(f"reports/enrol_cost.json was made for another recipe: run benchmarks/enrol_cost.py --arm {arm}")
    summary = report["summary"]
    none = summary["built-in, none enrolled"]["mean"]
    margins = sorted(float(k.rsplit(" ", 1)[1]) for k in summary if k.startswith("built-in, margin "))
    return next(m for m in margins if none - summary[f"built-in, margin {m}"]["mean"] <= max_cost)


def data_of(config: dict) -> str:
    """What the final run learnt from: labelled folds, the augmentation's noise pool, the pre-training."""
    data = "ESC-10 folds 1-4 (../shared/data/esc10, 320 clips, 10 classes)"
    if config.get("augment") == "robust":
        data += "; noise for augmentation from " + ", ".join(config["unlabeled"])
    if config.get("outlier_weight"):
        data += "; open-set negatives (outlier exposure, no labels) from " + ", ".join(config["unlabeled"])
    if config.get("init"):
        pre = json.loads((Path(config["init"]) / "checkpoint" / "checkpoint.json").read_text())["config"]
        loss = "InfoNCE" if pre["ssl_alpha"] == 1 else f"ACL (ssl_alpha {pre['ssl_alpha']}, margin {pre['margin']})"
        pool = ", ".join(pre["unlabeled"]) + ("" if not pre.get("pretrain_labeled", True) else " + the labelled folds")
        eq = f", a random frequency response on {pre['eq_prob']:.0%} of its views" if pre.get("eq_prob") else ""
        data += f"; encoder pre-trained self-supervised with {loss}, {pre['epochs']} epochs{eq}, on {pool} (no labels)"
    return data


def main(final_run: str, arm: str, out: str) -> None:
    fixtures = sorted((ROOT / "tests" / "fixtures").glob("*.ogg"))
    out_dir = export_artifact(final_run, out, real_audio=fixtures)
    config = json.loads((Path(final_run) / "checkpoint" / "checkpoint.json").read_text())["config"]
    calibration = ROOT / "reports" / "openset_cv.json"
    if json.loads(calibration.read_text())["arm"] != arm:
        sys.exit(f"{calibration} was made for another recipe: run benchmarks/openset_cv.py --arm {arm}")
    open_set = attach_open_set(out_dir, config["labeled"], tuple(config["train_folds"]), calibration=str(calibration))
    save_open_set(out_dir, replace(open_set, enrol_margin=enrol_margin(arm)))
    study = json.loads((ROOT / "reports" / "cv_study.json").read_text())
    int8_cv = json.loads((ROOT / "reports" / "int8_cv.json").read_text())["summary"]
    if int8_cv["arm"] != arm:
        sys.exit(f"reports/int8_cv.json was made for another recipe: run benchmarks/int8_cv.py --arm {arm}")
    events = json.loads((ROOT / "reports" / "events_cv.json").read_text())
    if events["arm"] != arm:
        sys.exit(f"reports/events_cv.json was made for another recipe: run benchmarks/events_cv.py --arm {arm}")
    manifest = load_artifact(out_dir).manifest
    manifest["events"] = {**events["chosen"], "chosen_by": f"benchmarks/events_cv.py --arm {arm}: best mean "
                          f"event-based F1 over its CV runs ({100 * events['best']['event_f1']:.1f} %)"}
    loss = ("cross-entropy" if config["loss"] == "ce" else
            f"supervised ACL (sup_alpha {config['sup_alpha']}·CE + angular margin {config['margin']})")
    manifest["default_model"] = {
        "data": data_of(config),
        "recipe": f"{arm}: {loss}, ResNet-18 width {config['width']}, {config['epochs']} epochs x "
                  f"{config['patches_per_clip']} random 1 s windows with sound per clip, augment {config['augment']}"
                  + (f", outlier exposure (weight {config['outlier_weight']})" if config.get("outlier_weight") else "")
                  + " (configs/default-model.yaml + benchmarks/cv_study.py ARMS)",
        "commands": "benchmarks/train_default.sh",
        "cross_validation": {"protocol": "4-fold CV over ESC-10 folds 1-4, mean ± std over fold x seed runs, "
                                         "clip accuracy as the service answers (windows with sound vote)",
                             **study["summary"][arm]},
        "int8_cross_validation": int8_cv,
    }
    soup = Path(final_run) / "soup.json"
    if soup.exists():
        runs = json.loads(soup.read_text())["runs"]
        manifest["default_model"]["weights"] = (f"the uniform average of {len(runs)} final runs with different seeds "
                                                f"(benchmarks/soup_cv.py): {', '.join(runs)}")
    assert manifest["sha256"] == sha256_file(out_dir / manifest["model_file"])
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)
    print(json.dumps({"artifact": str(out_dir), **{k: str(v) for k, v in smoke_test(out_dir).items()}}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
