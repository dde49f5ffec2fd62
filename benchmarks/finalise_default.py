"""Export the final default run and record in its manifest what the shipped model is.

    python benchmarks/finalise_default.py FINAL_RUN ARM OUT_DIR [--pretrained-share S [--pretrained RUN]]
        [--report cv_study]
    python benchmarks/finalise_default.py models/default ARM --recalibrate [--report cv_study]

The artifact gets the open set (prototypes from its training clips, the threshold from the
cross-validation of its recipe: reports/openset_cv.json, the prototype weight from reports/fusion_cv.json),
and, chosen on the CV runs in the form that ships (one run: every seed's; several final runs: the CV
runs averaged or joined per fold as the final runs are), at that weight,
the temperature of its scores (reports/calibration_cv.json) and the sound-event parameters at that
temperature (reports/events_cv.json); and a `default_model` section: data, recipe, commands, and the
recipe's cross-validated figures (reports/<report>.json of cv_study.py, the runs of this machine's
pre-training), clean and under the recording conditions. With --pretrained-share, the joint embedding
(export --pretrained-share, joined with --pretrained or the final run's own pre-trained encoder); the
open-set threshold and the enrolment margin must then come from the same joint embedding. The final
run trains on all four folds, so it has no validation of its own: the recipe's CV figures stand for it.
--recalibrate keeps an exported model (weights, prototypes, threshold, joint embedding) and sets again
what the reports choose for its scores: prototype weight, enrolment margins (from 5 clips and for one) and gate, temperature,
event parameters, and the open set's thresholds per class (calibrated on the runs of its one threshold).
"""

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from soup_cv import soup_arm

from core.artifact import MANIFEST_FILE, load_artifact, sha256_file, write_json_atomic
from export.onnx_export import export_artifact, smoke_test
from export.open_set import attach_open_set, read_calibration, save_open_set
from training.run import read_checkpoint_info

ROOT = Path(__file__).resolve().parents[1]


SERVED = {"prototype_weight": 0.0, "temperature": 1.0, "vote": "mean"}  # how a report's runs were served, unless it says


def made_for(name: str, arm: str, share: float | None = None, pretrained: str | None = None,
             command: str | None = None, needs: tuple[str, ...] = (), file: str | None = None,
             some_seeds: bool = False, **served: float | str) -> dict:
    """reports/<file or name>.json of benchmarks/<name>.py, if it was made for this recipe (ARM; with
    `some_seeds`, ARM:SEEDS too; and this joint embedding, and served so: prototype_weight, temperature, vote;
    and holds the keys `needs`, which older reports lack), else exit naming the command (`command`: the
    benchmark's arguments before the joint options, default `--arm ARM`)."""
    file = file or name
    path = ROOT / "reports" / f"{file}.json"
    if not path.exists():
        sys.exit(f"reports/{file}.json is missing: run benchmarks/{name}.py {command or '--arm ' + arm} (with the model's "
                 f"options{'' if file == name else ' and --report ' + file})")
    report = json.loads(path.read_text())
    made = report.get("arm") or report.get("summary", {}).get("arm")  # int8_cv.json keeps it in its summary
    if some_seeds and made:
        made = made.split(":")[0]
    joined = (report.get("pretrained_share", 0.0), report.get("pretrained"))
    served_so = all(report.get(k, SERVED[k]) == v for k, v in served.items()) and all(k in report for k in needs)
    if made != arm or (share is not None and joined != (share, pretrained)) or not served_so:
        options = f" --pretrained-share {share!r}" if share else ""
        options += f" --pretrained {pretrained}" if pretrained else ""
        options += "".join(f" --{k.replace('_', '-')} {v!r}" for k, v in served.items() if v != SERVED[k])
        sys.exit(f"reports/{file}.json was made for another recipe, embedding or weight: run benchmarks/{name}.py "
                 f"{command or '--arm ' + arm}{options}")
    return report


def enrol_margin(report: dict, max_cost: float = 0.02) -> float:
    """The smallest margin whose enrolled classes cost the built-in ones at most `max_cost` of
    accuracy (reports/enrol_cost.json of benchmarks/enrol_cost.py, the rule of BENCHMARKS.md)."""
    summary = report["summary"]
    none = summary["built-in, none enrolled"]["mean"]
    margins = sorted(float(k.rsplit(" ", 1)[1]) for k in summary if k.startswith("built-in, margin "))
    return next(m for m in margins if none - summary[f"built-in, margin {m}"]["mean"] <= max_cost)


def one_shot_margin(arm: str, share: float, pretrained: str | None, weight: float, vote: str, margin: float,
                    max_cost: float = 0.01, min_gain: float = 0.05) -> float | None:
    """The margin of a class enrolled from one clip (BENCHMARKS.md "A margin for one example"): on the five
    leave-out runs of benchmarks/enrol_bench.py (every ESC-10 class left out once, as served at `weight` and `vote`), the
    lowest margin below the model's `margin` whose known classes lose at most `max_cost` against it; kept iff it
    names `min_gain` more of the left-out classes' clips, and seven classes of one clip each enrolled at it cost the
    built-in classes at most 2 points (reports/enrol_cost_1shot.json of enrol_cost.py --shots 1); else None."""
    from enrol_bench import PAIRS, share_suffix, vote_suffix, weight_suffix

    suffix = f"{share_suffix(share, pretrained)}{weight_suffix(weight)}{vote_suffix(vote)}"
    files = [ROOT / "reports" / f"enrol_bench_{arm}_{'-'.join(pair)}{suffix}.json" for pair in PAIRS]
    if not all(f.exists() for f in files):
        sys.exit(f"no enrol_bench reports for {arm}{suffix}: run benchmarks/enrol_bench.py --arm {arm} "
                 f"--pretrained-share {share:g} --prototype-weight {weight:g} --vote {vote}")
    served = [json.loads(f.read_text())["results"]["1-shot"]["as_answered"] for f in files]
    if str(margin) not in served[0] or not any(float(m) < margin for m in served[0]):
        sys.exit(f"the enrol_bench reports of {arm}{suffix} lack the margin {margin} or margins below it: run "
                 f"benchmarks/enrol_bench.py --arm {arm} --pretrained-share {share:g} --prototype-weight {weight:g} "
                 f"--vote {vote} again")

    def mean(m: float, key: str) -> float:  # over the five pairs
        return sum(s[str(m)][key] for s in served) / len(served)

    floor = mean(margin, "known_fold4_accuracy_mean") - max_cost
    below = sorted(m for m in map(float, served[0]) if m < margin and mean(m, "known_fold4_accuracy_mean") >= floor)
    if not below or mean(below[0], "left_out_accuracy_mean") - mean(margin, "left_out_accuracy_mean") < min_gain:
        return None
    cost = made_for("enrol_cost", arm, share, pretrained, file="enrol_cost_1shot", prototype_weight=weight, vote=vote)
    summary = cost["summary"]
    if cost["shots"] != 1 or f"built-in, margin {below[0]}" not in summary:
        sys.exit(f"reports/enrol_cost_1shot.json lacks margin {below[0]} with one clip a class: run benchmarks/enrol_cost.py "
                 f"--arm {arm} --shots 1 --margins {below[0]} {margin} --report enrol_cost_1shot (with the model's options)")
    fine = summary["built-in, none enrolled"]["mean"] - summary[f"built-in, margin {below[0]}"]["mean"] <= 0.02
    return below[0] if fine else None


def enrol_gate(arm: str, share: float, pretrained: str | None, weight: float, vote: str, margin: float,
               one_shot: float | None, max_cost: float = 0.02) -> str:
    """Where an enrolled class is answered (BENCHMARKS.md "The clip gate, built"): "clip" iff, with
    enrol_cost.py's seven game-sound classes enrolled from 5 clips (at `margin`) and from 1 (at `one_shot`), the clip
    gate costs the built-in classes at most `max_cost` and names the enrolled classes' other clips at least as often
    as the window gate (reports/enrol_cost_clipgate5.json and _clipgate1.json of enrol_cost.py --clip-gate); else
    "window"."""
    for shots, m in ((5, margin), (1, margin if one_shot is None else one_shot)):
        file = f"enrol_cost_clipgate{shots}"
        # "clip_gate": made by core.answer's gate (earlier reports: a copy without the margin in the clip gate)
        report = made_for("enrol_cost", arm, share, pretrained, f"--arm {arm} --clip-gate", ("clip_gate",), file=file,
                          prototype_weight=weight, vote=vote)
        summary = report["summary"]
        if report["shots"] != shots or f"built-in, clip gate, margin {m}" not in summary:
            sys.exit(f"reports/{file}.json lacks the clip gate at margin {m} with {shots} clips a class: run "
                     f"benchmarks/enrol_cost.py --arm {arm} --shots {shots} --clip-gate --margins {m} --report {file} "
                     "(with the model's options)")
        cost = summary["built-in, none enrolled"]["mean"] - summary[f"built-in, clip gate, margin {m}"]["mean"]
        named, by_windows = (summary[f"enrolled recognised, {g}margin {m}"]["mean"] for g in ("clip gate, ", ""))
        if cost > max_cost or named < by_windows:
            return "window"
    return "clip"


def pretraining_of(run: str) -> str:
    """A self-supervised pre-training run in words: loss, epochs, view augmentations, pool."""
    pre = read_checkpoint_info(run)["config"]
    loss = "InfoNCE" if pre["ssl_alpha"] == 1 else f"ACL (ssl_alpha {pre['ssl_alpha']}, margin {pre['margin']})"
    pool = ", ".join(pre["unlabeled"]) + ("" if not pre.get("pretrain_labeled", True) else " + the labelled folds")
    views = ([f"a random frequency response on {pre['eq_prob']:.0%}"] if pre.get("eq_prob") else []) + (
        [f"a low-pass (order {pre['band_limit_order']}) on {pre['view_band_limit_prob']:.0%}"]
        if pre.get("view_band_limit_prob") else [])
    views_text = f", {' and '.join(views)} of its views" if views else ""
    return f"self-supervised with {loss}, {pre['epochs']} epochs{views_text}, on {pool} (no labels; {run})"


def data_of(config: dict, share: float, pretrained: str | None) -> str:
    """What the final run learnt from: labelled folds, the augmentation's noise pool, the pre-training."""
    data = "ESC-10 folds 1-4 (../shared/data/esc10, 320 clips, 10 classes)"
    if config.get("augment") == "robust":
        data += "; noise for augmentation from " + ", ".join(config["unlabeled"])
    if config.get("outlier_weight"):
        data += "; open-set negatives (outlier exposure, no labels) from " + ", ".join(config["unlabeled"])
    if config.get("teacher"):
        data += (f"; the answers of {config['teacher']} learnt beside the labels (distillation, weight "
                 f"{config['distill_weight']:g}, temperature {config['distill_temperature']:g})")
    if config.get("init"):
        data += f"; encoder pre-trained {pretraining_of(config['init'])}"
    if share and (not pretrained or pretrained == config.get("init")):
        data += f", whose own embedding joins the fine-tuned one ({share:g} of the cosine)"
    elif share:
        data += f"; the embedding joined ({share:g} of the cosine) with an encoder pre-trained {pretraining_of(pretrained)}"
    return data


def form_of(final_run: str) -> tuple[str, list[str]]:
    """How FINAL_RUN ships its final runs: ("run", [it]), ("ensemble", runs) or ("average", runs) (soup_cv.py)."""
    ensemble = read_checkpoint_info(final_run).get("ensemble")
    soup = Path(final_run) / "soup.json"
    if ensemble:
        return "ensemble", ensemble
    return ("average", json.loads(soup.read_text())["runs"]) if soup.exists() else ("run", [final_run])


def scoring(arm: str, share: float, pretrained: str | None, form: str, seeds: list[int]) -> dict:
    """What the reports chose for a model of ARM in that form (one run, or the runs of `seeds` averaged or
    side by side), each report checked to be made for it: prototype weight, enrolment margin, temperature,
    event parameters, int8 figures."""
    made_for("openset_cv", arm, share, pretrained)
    fusion = made_for("fusion_cv", arm, share, pretrained, f"{arm}:0,1 {arm}:2")
    weight = fusion["prototype_weight"]
    # the temperature and the event parameters of the form that ships: one run's on the CV runs of every
    # seed; several runs' on the CV runs of their seeds combined per fold as the final runs are
    shipped, group = arm, arm
    if form != "run":
        shipped = soup_arm([arm], seeds, ensemble=form == "ensemble")
        group = f"{shipped}:{'+'.join(map(str, seeds))}"
    calibration = made_for("calibration_cv", shipped, share, pretrained, group, ("tables",), prototype_weight=weight)
    if calibration["group"] != group:
        sys.exit(f"reports/calibration_cv.json was made on {calibration['group']}: run benchmarks/calibration_cv.py {group}")
    temperature, vote = calibration["temperature"], calibration.get("vote", "mean")  # T is fitted at the vote
    five = made_for("enrol_cost", arm, share, pretrained, prototype_weight=weight, vote=vote)
    if five.get("shots", 5) != 5:  # the margin from five clips; --shots 1 writes enrol_cost_1shot
        sys.exit(f"reports/enrol_cost.json enrolled {five['shots']} clips a class: run benchmarks/enrol_cost.py without --shots")
    margin = enrol_margin(five)
    one_shot = one_shot_margin(arm, share, pretrained, weight, vote, margin)
    gate = enrol_gate(arm, share, pretrained, weight, vote, margin, one_shot)
    events = made_for("events_cv", shipped, share, pretrained, f"--arm {shipped}", ("chosen_row",),
                      prototype_weight=weight, temperature=temperature)
    if form != "run" and not all(r["run"].endswith(f"-seed{'+'.join(map(str, seeds))}") for r in events["runs"]):
        sys.exit(f"reports/events_cv.json was made on other combinations of {shipped}'s runs: run benchmarks/events_cv.py "
                 f"--arm {shipped} --seeds {'+'.join(map(str, seeds))} ...")
    return {"fusion": fusion, "weight": weight, "margin": margin, "one_shot_margin": one_shot, "enrol_gate": gate,
            "calibration": calibration,
            "group": group, "temperature": temperature, "vote": vote, "events": events, "shipped_arm": shipped,
            "int8_cv": made_for("int8_cv", arm, share, pretrained, file="int8_cv" + ("" if vote == "mean" else f"_{vote}"),
                                some_seeds=True, prototype_weight=weight, vote=vote)["summary"]}


def scored(out_dir: Path, open_set, chosen: dict, manifest: dict) -> None:
    """Write the open set with the chosen weight, margin and temperature, and the manifest with the event
    parameters and the sections that say how they were chosen (all of it made before anything is written)."""
    events, fusion, calibration = chosen["events"], chosen["fusion"], chosen["calibration"]
    protocol = events["protocol"]
    manifest["events"] = {**events["chosen"], "chosen_by": f"benchmarks/events_cv.py --arm {chosen['shipped_arm']}: "
                          f"within {protocol['tie_f1']:g} of the best mean event-based F1 over its CV runs, "
                          f"the most events under {protocol['short_s']:g} s found "
                          f"({100 * events['chosen_row']['event_f1']:.1f} %)"}
    manifest["default_model"]["prototype_weight"] = {
        "value": chosen["weight"], "chosen_by": f"benchmarks/fusion_cv.py: best mean over clean and the recording "
                                                f"conditions on {fusion['chosen_on']} (reports/fusion_cv.md)",
        "cross_validation_as_served": fusion["at_chosen_weight"][fusion["arm"]]}
    manifest["default_model"]["temperature"] = {
        "value": chosen["temperature"], "fitted": calibration["fitted_temperature"], "adopted": calibration["adopted"],
        "chosen_by": f"benchmarks/calibration_cv.py {calibration['group']}: least NLL of held-out clips, clean and "
                     "five recording conditions, adopted if it lowers NLL and ECE on folds it was not fitted on "
                     "(reports/calibration_cv.md)",
        "held_out_ece": {k: calibration["tables"]["held_out"][k]["ece"] for k in ("clean", "pooled")}}
    manifest["default_model"]["vote"] = {
        "value": chosen["vote"], "chosen_by": "benchmarks/vote_cv.py under the rule of BENCHMARKS.md, \"How a clip's "
                                              "windows vote\"; the temperature fitted at it (calibration_cv.py --vote)"}
    manifest["default_model"]["int8_cross_validation"] = chosen["int8_cv"]
    manifest["default_model"]["one_shot_margin"] = {
        "value": chosen["one_shot_margin"], "chosen_by": "benchmarks/enrol_bench.py's five leave-out runs, 1-shot: the "
        "lowest margin costing the known classes at most 1 point, kept iff it names 5 points more left-out clips and "
        "costs the built-in classes at most 2 with seven one-clip classes enrolled (reports/enrol_cost_1shot.json); "
        "from 1 to 5 clips the margin runs linearly in 1/n to the model's enrol_margin"}
    manifest["default_model"]["enrol_gate"] = {
        "value": chosen["enrol_gate"], "chosen_by": "benchmarks/enrol_cost.py --clip-gate with seven game-sound classes "
        "enrolled from 5 clips and from 1: \"clip\" iff it costs the built-in classes at most 2 points and names the "
        "enrolled classes' other clips at least as often as the window gate (reports/enrol_cost_clipgate5.json, "
        "enrol_cost_clipgate1.json)"}
    save_open_set(out_dir, replace(open_set, enrol_margin=chosen["margin"], one_shot_margin=chosen["one_shot_margin"],
                                   enrol_gate=chosen["enrol_gate"],
                                   prototype_weight=chosen["weight"], temperature=chosen["temperature"], vote=chosen["vote"]))
    manifest["openset"] = load_artifact(out_dir).manifest["openset"]  # its new sha256
    assert manifest["sha256"] == sha256_file(out_dir / manifest["model_file"])
    write_json_atomic(out_dir / MANIFEST_FILE, manifest)


def served_figures(name: str, vote: str, group: str) -> dict:
    """The shipped form's CV figures as served (reports/NAME.json of benchmarks/vote_cv.py, whose first group
    must be `group`, that form's CV runs): mean ± std per condition at the model's vote, and, where the report
    compared it (--versus), its difference from the second group clip by clip."""
    report = json.loads((ROOT / "reports" / f"{name}.json").read_text())
    first, table = next(iter(report["tables"].items()))
    if first != group:
        sys.exit(f"reports/{name}.json measured {first}, not the form that ships ({group}): run benchmarks/vote_cv.py "
                 f"{group} ... --report {name}")
    figures = {c: {"mean": row["mean"], "std": row["std"]} for c, row in table[vote].items() if isinstance(row, dict)}
    served = {"report": f"reports/{name}.md", "group": group, "vote": vote, "machine": report["machine"], **figures}
    if "versus" in report:
        other = list(report["tables"])[1]
        served["versus"] = {"group": other, **{c: r["difference"] for c, r in report["versus"][vote].items()
                                               if isinstance(r, dict)}}
    return served


def main(final_run: str, arm: str, out: str, share: float = 0.0, report: str = "cv_study",
         pretrained: str | None = None, served_report: str | None = None) -> None:
    form, final_runs = form_of(final_run)
    seeds = [read_checkpoint_info(run)["config"]["seed"] for run in final_runs]
    chosen = scoring(arm, share, pretrained, form, seeds)
    fixtures = sorted((ROOT / "tests" / "fixtures").glob("*.ogg"))
    config = read_checkpoint_info(final_run)["config"]

    def finish(staged: Path) -> None:  # the whole model is made before it replaces OUT_DIR
        open_set = attach_open_set(staged, config["labeled"], tuple(config["train_folds"]),
                                   calibration=str(ROOT / "reports" / "openset_cv.json"))
        manifest = load_artifact(staged).manifest
        loss = ("cross-entropy" if config["loss"] == "ce" else
                f"supervised ACL (sup_alpha {config['sup_alpha']}·CE + angular margin {config['margin']})")
        manifest["default_model"] = {
            "data": data_of(config, share, pretrained),
            "recipe": f"{arm}: {loss}, ResNet-18 width {config['width']}, {config['epochs']} epochs x "
                      f"{config['patches_per_clip']} random 1 s windows with sound per clip, augment {config['augment']}"
                      + (f", outlier exposure (weight {config['outlier_weight']})" if config.get("outlier_weight") else "")
                      + " (configs/default-model.yaml + benchmarks/cv_study.py ARMS)",
            "commands": "benchmarks/train_default.sh",
            "cross_validation_report": f"reports/{report}.md",
            "cross_validation": cross_validation(report, arm),
            "final_runs": final_runs,
            "final_seeds": seeds,
            "form": form,
            "weights": {"run": f"one final run: {final_runs[0]}",
                        "average": f"the uniform average of {len(final_runs)} final runs with different seeds "
                                   f"(benchmarks/soup_cv.py): {', '.join(final_runs)}",
                        "ensemble": f"an ensemble of {len(final_runs)} final runs with different seeds, answering their "
                                    f"mean softmax and mean cosine (benchmarks/soup_cv.py --ensemble): "
                                    f"{', '.join(final_runs)}"}[form],
        }
        if served_report:
            manifest["default_model"]["cross_validation_of_form"] = served_figures(served_report, chosen["vote"],
                                                                                  chosen["group"])
        scored(staged, open_set, chosen, manifest)
    out_dir = export_artifact(final_run, out, real_audio=fixtures, pretrained_share=share, pretrained=pretrained,
                              finish=finish)
    print(json.dumps({"artifact": str(out_dir), **{k: str(v) for k, v in smoke_test(out_dir).items()}}))


def cross_validation(report: str, arm: str) -> dict:
    """The manifest's `cross_validation`: the recipe's CV figures by the head alone (reports/REPORT.json of
    cv_study.py)."""
    study = json.loads((ROOT / "reports" / f"{report}.json").read_text())
    return {"protocol": "4-fold CV over ESC-10 folds 1-4, mean ± std over fold x seed runs, clip accuracy by the head "
                        "alone (prototype weight 0; windows with sound vote); as served: "
                        "prototype_weight.cross_validation_as_served", **study["summary"][arm]}


def recalibrate(out: str, arm: str, report: str | None = None) -> None:
    """Keep an exported default model of ARM (its weights, prototypes, threshold and line, its joint
    embedding) and set what the reports now choose for it: prototype weight, enrolment margin,
    temperature, event parameters, and the thresholds per class calibrated beside its threshold; with `report`,
    the recipe's CV figures again (its runs scored again since, e.g. under mended recording conditions)."""
    artifact = load_artifact(out)
    manifest = artifact.manifest
    if not manifest["default_model"]["recipe"].startswith(f"{arm}:"):
        sys.exit(f"{out} was trained by another recipe: {manifest['default_model']['recipe']}")
    share = manifest.get("embedding", {}).get("pretrained_share", 0.0)
    encoder = manifest["embedding"]["pretrained_encoder"]["run"] if share else None
    pretrained = None if encoder == manifest["training"]["config"].get("init") else encoder
    made = manifest["default_model"]
    n_final = len(made["final_runs"])  # older manifests: no form or seeds (two averaged runs of seeds 0, 1)
    form, seeds = made.get("form", "average" if n_final > 1 else "run"), made.get("final_seeds", list(range(n_final)))
    chosen = scoring(arm, share, pretrained, form, seeds)
    open_set = with_class_thresholds(artifact)
    for what, old, new in (("prototype weight", artifact.open_set.prototype_weight, chosen["weight"]),
                           ("vote", artifact.open_set.vote, chosen["vote"]),
                           ("thresholds per class", artifact.open_set.class_thresholds_rad, open_set.class_thresholds_rad)):
        if old != new:
            print(f"the {what} changes ({old} -> {new}): run `soundarc quantize {out}` again, its int8 check "
                  "answered with the old one", file=sys.stderr)
    if report:
        manifest["default_model"].update(cross_validation_report=f"reports/{report}.md",
                                         cross_validation=cross_validation(report, arm))
    scored(Path(out), open_set, chosen, manifest)
    print(json.dumps({"artifact": out, **{k: str(v) for k, v in smoke_test(out).items()}}))


def with_class_thresholds(artifact):
    """The model's open set with the thresholds per class of reports/openset_cv.json (openset_cv.py --per-class),
    where it has them and they were calibrated on the same runs as the model's one threshold, which stays; else
    the model's open set as it is (said on stderr)."""
    open_set, calibrated = artifact.open_set, read_calibration(str(ROOT / "reports" / "openset_cv.json"), artifact)
    if not calibrated["class_thresholds_rad"]:
        return open_set
    if abs(calibrated["threshold_rad"] - open_set.threshold_rad) > 1e-9:
        print(f"reports/openset_cv.json's threshold ({calibrated['threshold_rad']:.4f} rad) is not the model's "
              f"({open_set.threshold_rad:.4f}): calibrated on other runs, its thresholds per class are not taken "
              "(export the model again to take them)", file=sys.stderr)
        return open_set
    return replace(open_set, class_thresholds_rad=calibrated["class_thresholds_rad"], calibrated_on=calibrated["calibrated_on"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("final_run", help="the final run (or an average or ensemble of runs); with --recalibrate: "
                                          "the exported model")
    parser.add_argument("arm")
    parser.add_argument("out_dir", nargs="?", help="where to export (not with --recalibrate)")
    parser.add_argument("--pretrained-share", type=float, default=0.0, help="the joint embedding (export --pretrained-share)")
    parser.add_argument("--pretrained", help="join this pre-training run's encoder (default: the final run's own)")
    parser.add_argument("--report", help="the CV figures: reports/REPORT.json of cv_study.py (default cv_study; with "
                                         "--recalibrate: the model's kept unless given)")
    parser.add_argument("--served-report", help="the shipped form's CV as served: reports/NAME.json of vote_cv.py "
                                                "(its first group the form's CV runs)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="keep the exported model FINAL_RUN and set only what the reports choose for its scores")
    args = parser.parse_args()
    if args.recalibrate == bool(args.out_dir):
        parser.error("give OUT_DIR to export, or --recalibrate to keep an exported model")
    if args.recalibrate and (args.pretrained_share or args.pretrained):
        parser.error("--recalibrate takes the joint embedding from the exported model")
    if args.recalibrate:
        recalibrate(args.final_run, args.arm, args.report)
    else:
        main(args.final_run, args.arm, args.out_dir, args.pretrained_share, args.report or "cv_study", args.pretrained,
             args.served_report)
