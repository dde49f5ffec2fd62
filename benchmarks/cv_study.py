"""Recipes compared by 4-fold cross-validation over ESC-10 folds 1-4 (issue 19), seeds as given.

    python benchmarks/cv_study.py [--arms ARM...] [--seeds 0 1] [--folds 1 2 3 4] [--threads 2] [--rescore]
        [--report NAME] [--pretrained-share S [--pretrained runs/pretrain/NAME]]

Each run trains on three folds and is scored on the fourth by its head alone (windows with sound
vote, as the service pools them; the service also blends in the prototypes: benchmarks/fusion_cv.py),
clean and under the recording conditions of training.robustness; it also records, for
the open-set threshold, every held-out clip's angle to the nearest class prototype of its training
folds and the angles of the unknown clips (unlabeled/, never used in training). Every run is one
`soundarc train finetune` command; a finished run (its cv.json exists) is skipped and an
interrupted one resumes, so rerunning continues the study (`--rescore` scores finished runs again,
under a condition added since). Order: seed-major, so that a partial
study is balanced. Writes reports/cv_study.json and reports/cv_study.md (--report NAME: reports/NAME.*,
for runs from another machine's pre-training, which is another encoder draw). `--pretrained-share S`
scores the finished runs again as served with the joint embedding (training.model.InferenceModel)
into their cv-share<S>.json, for openset_cv.py and embedding_cv.py; the accuracies are the same.
`--pretrained runs/pretrain/NAME` joins that encoder instead of each run's own init (cv-share<S>-NAME.json).
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from _data import (
    CV_FOLDS,
    REPORTS,
    ROOT,
    add_joint_arguments,
    cv_result,
    cv_run,
    cv_runs,
    joint_arguments,
    recipe_table,
    require_data,
    training_clips,
)

from core.activity import ActivityConfig, voting_windows, window_activity_of
from core.artifact import write_json_atomic
from core.features import FrontendConfig, patches
from training import robustness
from training.data import find_audio, scan_labeled
from training.model import InferenceModel
from training.robustness import CONDITIONS, condition_features
from training.run import load_inference_model, read_checkpoint_info

PRETRAIN_RUNS = ROOT / "runs" / "pretrain"
CONFIG = "configs/default-model.yaml"
REPORT = "cv_study"  # reports/REPORT.json and .md: the study's runs (the Xeon encoder draw)
ESC10 = require_data("esc10")
NOISE = require_data("unlabeled")  # evaluation noise and open-set unknowns: never in training
NOISE_TRAIN = require_data("unlabeled_more")  # the robust recipe's training noise pool
ROBUST = ["augment=robust", f"unlabeled=[{NOISE_TRAIN}]"]  # robust augmentation, its noise from unlabeled_more/
ACL_ROBUST = ["loss=acl", "sup_alpha=0.7", *ROBUST]
OE = [*ACL_ROBUST, "outlier_weight=0.5"]  # ... with outlier exposure
EQ_FINETUNE = [*OE, "eq_prob=0.5"]  # ... and the random frequency response
SSL_OE = ["init=runs/pretrain/ssl-acl", *OE]  # fine-tuned from the ACL pre-training
EQ = ["init=runs/pretrain/ssl-acl", *EQ_FINETUNE]  # the shipped recipe
KD = ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "distill_weight=0.5",  # ... taught by its fold's ensemble
      "teacher=runs/cv/ssl-acl-rc-acl-robust-oe-eq-ens/fold{fold}-seed0+1"]
TEACHER = re.compile(r"teacher=runs/cv/(?P<arm>.+)-ens/fold\{fold\}-seed(?P<seeds>[0-9+]+)")
ARMS = {
    "ce-views": ["loss=ce", "augment=views", "active_only=false"],  # the shipped recipe of an early session
    "ce-robust": ["loss=ce", *ROBUST],
    "acl-robust": ACL_ROBUST,
    # the same, with the weights of the last 10 of 40 epochs averaged (training.averaging)
    "ce-robust-avg": ["loss=ce", *ROBUST, "average_last=10"],
    "acl-robust-avg": [*ACL_ROBUST, "average_last=10"],
    # acl-robust fine-tuned from a self-supervised encoder (PRETRAININGS)
    "ssl-acl-acl-robust": ["init=runs/pretrain/ssl-acl", *ACL_ROBUST],
    "ssl-infonce-acl-robust": ["init=runs/pretrain/ssl-infonce", *ACL_ROBUST],
    # the chosen recipe with mixup (Beta(0.5, 0.5)), fine-tuned twice as long; acl-robust at width 64
    "ssl-acl-acl-robust-mixup": ["init=runs/pretrain/ssl-acl", *ACL_ROBUST, "mixup=0.5"],
    "ssl-acl-acl-robust-e80": ["init=runs/pretrain/ssl-acl", *ACL_ROBUST, "epochs=80"],
    "acl-robust-w64": [*ACL_ROBUST, "width=64"],
    # outlier exposure: unlabeled_more/ patches as open-set negatives (uniform target), from scratch
    # and on the shipped recipe
    "acl-robust-oe": OE,
    "ssl-acl-acl-robust-oe": SSL_OE,
    "ssl-acl-acl-robust-oe-e80": [*SSL_OE, "epochs=80"],
    # the shipped recipe with 80 % of patches low-passed (was 50 %): aimed at its weakest column
    "ssl-acl-acl-robust-oe-bl8": [*SSL_OE, "band_limit_prob=0.8"],
    # ... or with a 16th-order low-pass (nearly the brick wall of resampling) instead of a 4th-order one
    "ssl-acl-acl-robust-oe-steep": [*SSL_OE, "band_limit_order=16"],
    # ... or with the pre-trained encoder fine-tuned at 0.3 times the heads' learning rate (keeps more of it)
    "ssl-acl-acl-robust-oe-elr3": [*SSL_OE, "encoder_lr_scale=0.3"],
    # ... or with the resized crop on the time axis only (the mel axis neither shifted nor stretched), to test
    # whether the stretch blurs what tells rain, helicopter and sea waves apart (BENCHMARKS.md: it does not)
    "ssl-acl-acl-robust-oe-tcrop": [*SSL_OE, "crop_mel=false"],
    # ... or with half the windows given a random smooth frequency response (±6 dB, five mel-spaced anchors),
    # aimed at other microphones and rooms: the shipped recipe since (BENCHMARKS.md)
    "ssl-acl-acl-robust-oe-eq": EQ,
    # ... and with the steep low-pass too (the two changes that each helped a recording condition, together)
    "ssl-acl-acl-robust-oe-eq-steep": [*EQ, "band_limit_order=16"],
    # ... with the encoder fine-tuned at 0.3 times the heads' learning rate (-elr3 named new classes better)
    "ssl-acl-acl-robust-oe-eq-elr3": [*EQ, "encoder_lr_scale=0.3"],
    # ... with more of the angular margin in the supervised loss: 0.4·CE + 0.6·L_AM instead of 0.7·CE + 0.3·L_AM
    "ssl-acl-acl-robust-oe-eq-a4": [*EQ, "sup_alpha=0.4"],
    # ... with a stronger frequency response (up to ±12 dB at each anchor instead of ±6)
    "ssl-acl-acl-robust-oe-eq12-steep": [*EQ, "eq_db=12", "band_limit_order=16"],
    # ... with the encoder's window twice as long (2.01 s, scored every 1 s): steady textures (rain, sea waves,
    # helicopter, most of the errors) heard over more of their swell; the encoder pre-trained on 1 s windows
    "ssl-acl-acl-robust-oe-eq-2s": [*EQ, "patch_frames=201", "eval_hop_frames=100"],
    # ... with a second input channel, each mel band less its mean over the window (a microphone's or room's
    # fixed response removed; training.model), its stem weights zero at the start of the fine-tune
    "ssl-acl-acl-robust-oe-eq-bc": [*EQ, "band_centring=true"],
    # ... and with the steep low-pass too (the two single-run gains, aimed at different columns, together)
    "ssl-acl-acl-robust-oe-eq-bc-steep": [*EQ, "band_centring=true", "band_limit_order=16"],
    # ... or with half the windows given a room's late reverberation (training.augment.reverb), aimed at other rooms
    "ssl-acl-acl-robust-oe-eq-steep-rev": [*EQ, "band_limit_order=16", "reverb_prob=0.5"],
    # the shipped recipe fine-tuned from a pre-training whose views have the random EQ too (each view its own curve)
    "ssl-acl-eq-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-eq", *EQ_FINETUNE],
    # ... from a pre-training whose views have the random EQ and the steep low-pass (recording conditions)
    "ssl-acl-rc-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE],
    # ... the same overrides, trained after training.augment.band_limit kept the front-end's floor as the floor
    # (it had raised every floor bin of every robust view by 3 dB): runs of its own, paired with those above
    # (BENCHMARKS.md "The low-pass's floor mended")
    "ssl-acl-rc-acl-robust-oe-eq-floor": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE],
    # ... the same overrides, trained after training.augment.add_noise kept the floor as the floor (it scaled a silent
    # noise patch up to the SNR as flat noise) and robust_view moved the compander after the steps in the linear
    # domain (they took the floor it had moved as sound): paired with -floor (BENCHMARKS.md "The noise's floor")
    "ssl-acl-rc-acl-robust-oe-eq-mend": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE],
    # ... with label smoothing 0.1 in the cross-entropy part of supervised ACL (a regulariser for a small labelled
    # set): paired with -mend, the same code (BENCHMARKS.md "Label smoothing")
    "ssl-acl-rc-acl-robust-oe-eq-ls": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "label_smoothing=0.1"],
    # ... with band centring (the second input channel above), as a member of an ensemble beside the recipe's own runs
    # (BENCHMARKS.md "Band centring as an ensemble member")
    "ssl-acl-rc-acl-robust-oe-eq-bc": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "band_centring=true"],
    # ... pooling the encoder's last feature map by learnt weights over its positions, not their mean (it starts as
    # the mean; BENCHMARKS.md "Attention pooling")
    "ssl-acl-rc-acl-robust-oe-eq-attn": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "attention_pool=true"],
    # ... with stochastic weight averaging as published: 10 more epochs at a constant 0.25 × lr after the 40 of the
    # cosine, their weights averaged (training.averaging); benchmarks/swa_look.sh starts each run from its -floor
    # pair's state at epoch 40, which is what these 40 epochs train (BENCHMARKS.md "Weight averaging at a constant rate")
    "ssl-acl-rc-acl-robust-oe-eq-swa": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "epochs=50", "average_last=10",
                                        "average_lr=0.25"],
    # ... from that pre-training run twice as long (100 epochs; its kNN monitor was still rising at 50)
    "ssl-acl-rc-e100-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-rc-e100", *EQ_FINETUNE],
    # ... and both from a second draw of their pre-training (its seed 1)
    "ssl-acl-rc-s1-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-rc-s1", *EQ_FINETUNE],
    "ssl-acl-rc-e100-s1-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-rc-e100-s1", *EQ_FINETUNE],
    # ... with more of the background noise and louder: 75 % of patches (was 50 %) at 0-20 dB SNR (was 3-30),
    # aimed at the noise column, the one furthest under the ambition (BENCHMARKS.md)
    "ssl-acl-rc-acl-robust-oe-eq-noisy": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "noise_prob=0.75",
                                          "snr_db=[0,20]"],
    # ... or as often as shipped (50 %) but louder, 0-20 dB: -noisy lost 4.7 points band-limited, where one
    # band-limited training patch in four was free of noise; here one in two, as shipped
    "ssl-acl-rc-acl-robust-oe-eq-loud": ["init=runs/pretrain/ssl-acl-rc", *EQ_FINETUNE, "snr_db=[0,20]"],
    # the shipped recipe distilled from the two-seed ensemble of its own fold (seeds 0+1, soup_cv.py --ensemble):
    # half the labelled windows' loss the KL divergence to the ensemble's answer at τ 2 (BENCHMARKS.md
    # "Distilling the ensemble")
    "ssl-acl-rc-acl-robust-oe-eq-kd": KD,
    # ... the teacher answering each patch as recorded, the run learning it for the augmented view
    "ssl-acl-rc-acl-robust-oe-eq-kdc": [*KD, "distill_clean=true"],
    # the shipped recipe at width 64 (the paper's), pre-trained at that width (PRETRAININGS: 25 epochs of 100 s
    # on 2 cores, where width 32 takes 28 s an epoch): 3.9x the compute of every window
    "ssl-acl-w64-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-w64", *EQ_FINETUNE, "width=64"],
    # the shipped recipe fine-tuned from ssl-acl continued on the held-out fold's three training folds (their
    # audio, not their labels: PRETRAININGS), so the encoder has heard the recordings it is fine-tuned on
    "ssl-acl-dapt-acl-robust-oe-eq": ["init=runs/pretrain/ssl-acl-dapt/fold{fold}", *EQ_FINETUNE],
}


def teacher_of(arm: str) -> tuple[str, list[int]] | None:
    """The arm and seeds whose per-fold ensemble (soup_cv.py --ensemble) a distilled arm learns from."""
    match = next((m for s in ARMS[arm] if (m := TEACHER.fullmatch(s))), None)
    return (match["arm"], [int(s) for s in match["seeds"].split("+")]) if match else None


def pretrain_sets(width: int = 32, epochs: int = 50, seed: int = 0) -> list[str]:
    """A self-supervised pre-training on unlabeled_more/ alone (no ESC-10 clip, so one encoder is fair to
    every held-out fold; unlabeled/ stays out for the noise and open-set tests). Folds 1-3 / 4 only feed
    its kNN monitor."""
    return ["pretrain_labeled=false", f"unlabeled=[{NOISE_TRAIN}]", f"width={width}", f"epochs={epochs}",
            "patches_per_clip=1", "eval_every=10", "train_folds=[1,2,3]", "val_folds=[4]", f"seed={seed}"]


def adapt_sets(epochs: int = 100) -> list[str]:
    """ssl-acl continued on the labelled training folds' audio alone (domain-adaptive pre-training; the
    labels unused). One run per held-out fold (`{fold}` in the arm's init): 240 clips, 4 steps an epoch."""
    return ["init=runs/pretrain/ssl-acl", "ssl_alpha=0.3", "pretrain_labeled=true", "width=32", f"epochs={epochs}",
            "patches_per_clip=1", "eval_every=25", "seed=0"]


# views under recording conditions: the random EQ and the steep low-pass of the fine-tune, half each
RC_VIEWS = ["eq_prob=0.5", "view_band_limit_prob=0.5", "band_limit_order=16"]
PRETRAININGS = {"ssl-acl": ["ssl_alpha=0.3", *pretrain_sets()], "ssl-infonce": ["ssl_alpha=1.0", *pretrain_sets()],
                "ssl-acl-eq": ["ssl_alpha=0.3", *pretrain_sets(), "eq_prob=0.5"],
                "ssl-acl-rc": ["ssl_alpha=0.3", *pretrain_sets(), *RC_VIEWS],
                "ssl-acl-rc-e100": ["ssl_alpha=0.3", *pretrain_sets(epochs=100), *RC_VIEWS],
                # a second draw of both (pre-training seed 1): does e100's noise gain replicate? (BENCHMARKS.md)
                "ssl-acl-rc-s1": ["ssl_alpha=0.3", *pretrain_sets(seed=1), *RC_VIEWS],
                "ssl-acl-rc-e100-s1": ["ssl_alpha=0.3", *pretrain_sets(epochs=100, seed=1), *RC_VIEWS],
                "ssl-acl-w64": ["ssl_alpha=0.3", *pretrain_sets(width=64, epochs=25)],
                "ssl-acl-dapt": adapt_sets()}


def command(arm: str, fold: int, seed: int, threads: int) -> list[str]:
    sets = [*(s.format(fold=fold) for s in ARMS[arm]), *fold_sets(fold), f"seed={seed}", f"threads={threads}"]
    return train_command("finetune", sets, cv_run(arm, fold, seed))


def fold_sets(fold: int) -> list[str]:
    """Train on the other three folds, validate on `fold`."""
    return [f"train_folds={[f for f in CV_FOLDS if f != fold]}", f"val_folds=[{fold}]"]


def init_of(sets: list[str], fold: int) -> str | None:
    """The pre-training run (runs/pretrain/...) a list of settings starts from for held-out `fold`, if any."""
    return next((s.removeprefix("init=").format(fold=fold) for s in sets if s.startswith("init=runs/pretrain/")), None)


def train_command(mode: str, sets: list[str], out: Path) -> list[str]:
    sets = [f"labeled={ESC10}", *sets]  # the config names ../shared/data/esc10; this follows SOUNDARC_DATA
    return ["soundarc", "train", mode, "--config", CONFIG, *(a for s in sets for a in ("--set", s)), "--out", str(out)]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run([str(Path(sys.executable).parent / cmd[0]), *cmd[1:]], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def pretrain_for(arm: str, fold: int, threads: int) -> None:
    """Runs (or resumes) the pre-training an arm starts from for held-out `fold`; a finished one is kept."""
    if init := init_of(ARMS[arm], fold):
        pretrain(init, fold, threads)


def pretrain(init: str, fold: int, threads: int) -> None:
    """Runs (or resumes) runs/pretrain/NAME or, per held-out fold, runs/pretrain/NAME/foldK, after the
    pre-training it continues, if any."""
    out = ROOT / init
    if (out / "done").exists():
        return
    per_fold = out.parent != PRETRAIN_RUNS
    sets = PRETRAININGS[(out.parent if per_fold else out).name]
    if base := init_of(sets, fold):
        pretrain(base, fold, threads)
    run(train_command("pretrain", [*sets, *(fold_sets(fold) if per_fold else []), f"threads={threads}"], out))
    (out / "done").touch()


@torch.no_grad()
def window_outputs(model, clips, frontend, activity) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per clip (log-mel, gains): the logits (N, C) and encoder output h (N, D) of its windows with
    sound (all windows when none), as the service keeps them; for an InferenceModel, its served
    embedding in place of h."""
    out = []
    for logmel, gains in clips:
        x = torch.from_numpy(patches(logmel, frontend)[0])[:, None]
        if isinstance(model, InferenceModel):
            logits, h = (t.numpy() for t in model(x))
        else:
            h = model.encoder(x)  # (N, D)
            logits, h = model.classifier(h).numpy(), h.numpy()
        keep = voting_windows(window_activity_of(logmel, frontend, activity, gains))
        out.append((logits[keep], h[keep]))
    return out


def outputs(model, clips, frontend, activity) -> tuple[np.ndarray, np.ndarray]:
    """Per clip (log-mel, gains): mean softmax (K, C) and L2-normalised mean embedding (K, D) over
    the windows with sound (all windows when none)."""
    probs, embeddings = [], []
    for logits, h in window_outputs(model, clips, frontend, activity):
        probs.append(torch.softmax(torch.from_numpy(logits), dim=1).numpy().mean(axis=0))
        e = torch.nn.functional.normalize(torch.from_numpy(h), dim=1).numpy().mean(axis=0)
        embeddings.append(e / np.linalg.norm(e))
    return np.stack(probs), np.stack(embeddings)


def clean_features(paths: list[Path], frontend: FrontendConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per audio file, its (log-mel, frame gains) as recorded (cached under cache/)."""
    return condition_features(paths, [], frontend, ROOT / "cache", ("clean",))["clean"]


def measure_runs(report: Path, arms: list[str], seeds: list[int] | None, measure) -> dict:
    """{arm: {run: measure(run, clips, index, unknown)}} for the CV runs of `arms` (of `seeds`, or all),
    merged into the runs of the JSON report at `report`. `clips`, `index`: ESC-10 and its label
    index; `unknown`: the clean features of unlabeled/ (never in training)."""
    clips, names = scan_labeled(ESC10)
    index = {n: i for i, n in enumerate(names)}
    runs = json.loads(report.read_text())["runs"] if report.exists() else {}
    for arm in arms:
        arm_runs = [r for s in (seeds or [None]) for r in cv_runs(arm, s)]
        if arm_runs:
            frontend = FrontendConfig.from_dict(read_checkpoint_info(arm_runs[0])["frontend"])
            unknown = clean_features(find_audio(NOISE), frontend)
            runs.setdefault(arm, {}).update({r.name: measure(r, clips, index, unknown) for r in arm_runs})
    return runs


def evaluate(run: Path, fold: int, pretrained_share: float = 0.0, pretrained: str | None = None) -> dict:
    model, info = load_inference_model(run, pretrained_share, pretrained)
    frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
    clips, names = scan_labeled(ESC10)
    index = {n: i for i, n in enumerate(names)}
    held = [c for c in clips if c.fold == fold]
    train = training_clips(clips, fold)  # the run's training folds: its prototypes
    noise = find_audio(NOISE)
    cache = ROOT / "cache"
    labels = np.array([index[c.label] for c in held])
    held_features = condition_features([c.path for c in held], noise, frontend, cache)
    train_features = condition_features([c.path for c in train], noise, frontend, cache, ("clean",))["clean"]
    unknown_features = condition_features(noise, noise, frontend, cache, ("clean",))["clean"]

    _, train_h = outputs(model, train_features, frontend, activity)
    train_y = np.array([index[c.label] for c in train])
    prototypes = np.stack([train_h[train_y == k].mean(axis=0) for k in range(len(names))])
    prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)

    def angles(h):
        return np.arccos(np.clip(h @ prototypes.T, -1, 1).max(axis=1))

    def nearest(h):  # the class whose prototype each angle is to (openset_cv.py --per-class)
        return (h @ prototypes.T).argmax(axis=1).tolist()

    result = {"run": run.name, "fold": fold, "labels": list(names), "pretrained_share": pretrained_share,
              "pretrained": info.get("pretrained", {}).get("run"), "robustness": robustness.VERSION, "conditions": {}}
    for condition, features in held_features.items():
        probs, h = outputs(model, features, frontend, activity)
        result["conditions"][condition] = {
            "accuracy": float((probs.argmax(axis=1) == labels).mean()),
            "correct": (probs.argmax(axis=1) == labels).tolist(), "angles": angles(h).tolist(),
            "nearest": nearest(h), "confidence": probs.max(axis=1).tolist()}
    _, unknown_h = outputs(model, unknown_features, frontend, activity)
    result["unknown_angles"], result["unknown_nearest"] = angles(unknown_h).tolist(), nearest(unknown_h)
    return result


def compact(results: dict) -> dict:
    """{arm: {run: {fold, condition: accuracy}}}: what the report keeps of each run."""
    return {arm: {k: {"fold": r["fold"], **{c: r["conditions"][c]["accuracy"] for c in CONDITIONS if c in r["conditions"]}}
                  for k, r in runs.items()} for arm, runs in results.items()}


def summarise(runs: dict) -> dict:
    """{arm: {condition: mean, std over runs, runs}} (std over the fold x seed runs); a condition
    some run was not scored under (added after it ran: `--rescore`) is left out of its arm's row."""
    table = {}
    for arm, arm_runs in runs.items():
        row = {}
        for condition in CONDITIONS:
            if not all(condition in r for r in arm_runs.values()):
                continue
            acc = np.array([r[condition] for r in arm_runs.values()])
            row[condition] = {"mean": float(acc.mean()), "std": float(acc.std()), "runs": len(acc)}
        table[arm] = row
    return table


def write_report(results: dict, name: str = REPORT) -> None:
    """Merges these runs into reports/NAME.json and .md (arms and runs of earlier studies are kept)."""
    path = REPORTS / f"{name}.json"
    runs = json.loads(path.read_text())["runs"] if path.exists() else {}
    for arm, arm_runs in compact(results).items():
        runs.setdefault(arm, {}).update(arm_runs)
    table = summarise(runs)
    REPORTS.mkdir(exist_ok=True)
    path.write_text(json.dumps({"summary": table, "runs": runs}, indent=1))
    markdown = recipe_table(table, {arm: row["clean"]["runs"] for arm, row in table.items()}, list(CONDITIONS),
                            lambda m: f"{100 * m['mean']:.1f} ± {100 * m['std']:.1f}")
    (REPORTS / f"{name}.md").write_text(markdown)
    print(markdown)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rescore", action="store_true", help="score finished runs again (a condition added since)")
    parser.add_argument("--report", default=REPORT, help="reports/REPORT.json and .md (another machine's encoder "
                        "draw: its own report, so that its runs do not replace the same-named ones)")
    add_joint_arguments(parser, "score the finished runs again with the joint embedding, into cv-share<S>[-NAME].json")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    if share:
        return score_joint(args.arms, args.seeds, args.folds, share, args.rescore, pretrained)
    results = {arm: {} for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            for fold in args.folds:
                out = cv_run(arm, fold, seed)
                trained = (out / "cv.json").exists()
                if not trained:
                    pretrain_for(arm, fold, args.threads)
                    run(command(arm, fold, seed, args.threads))
                if not trained or args.rescore or stale(out / "cv.json"):
                    write_json_atomic(out / "cv.json", evaluate(out, fold))  # its presence marks the run done
                results[arm][out.name] = json.loads((out / "cv.json").read_text())
            write_report({a: r for a, r in results.items() if r}, args.report)


def stale(scores: Path) -> bool:
    """Whether a run's scores were measured under other recording conditions than training.robustness makes now."""
    return json.loads(scores.read_text()).get("robustness", 1) != robustness.VERSION


def score_joint(arms: list[str], seeds: list[int], folds: list[int], share: float, rescore: bool,
                pretrained: str | None = None) -> None:
    """cv-share<S>[-NAME].json beside each finished run's cv.json: the same runs served with the joint embedding."""
    for seed in seeds:
        for arm in arms:
            for fold in folds:
                out = cv_run(arm, fold, seed)
                result = cv_result(out, share, pretrained)
                if (out / "cv.json").exists() and (rescore or not result.exists() or stale(result)):
                    write_json_atomic(result, evaluate(out, fold, share, pretrained))
                    print(f"scored {out} into {result.name}", flush=True)


if __name__ == "__main__":
    main()
