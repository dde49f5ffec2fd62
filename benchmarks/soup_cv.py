"""Weight averaging across seeds ("model soup"), measured by cross-validation (issue 19).

    python benchmarks/soup_cv.py --arm ssl-acl-acl-robust --seeds 0 1
    python benchmarks/soup_cv.py --arm ARM_A ARM_B --seeds 0     # across recipes fine-tuned from one encoder
    python benchmarks/soup_cv.py --runs RUN... --out SOUP_RUN     # just average these runs (the final model)
    python benchmarks/soup_cv.py --arm ARM --seeds 0 1 --renorm   # BatchNorm statistics recomputed, not averaged
    python benchmarks/soup_cv.py --arm ARM --seeds 0 1 2 --toward-init 0.3   # each run moved back to its encoder
    python benchmarks/soup_cv.py --arm ARM --seeds 0 1 --ensemble   # not averaged: an ensemble of the runs

For each fold, the weights of the arm's runs with those seeds (benchmarks/cv_study.py) are averaged,
BatchNorm statistics included, into one model of the same size, which is scored like any CV run:
clean and under the recording conditions, with the open-set angles. Runs fine-tuned from one
pre-trained encoder start from the same weights and may average well; runs from different random
starts are not expected to (the control). The result is the arm `<arm>-soup` in
reports/cv_study.json (`<arm>-soup3` for three seeds); its runs are in runs/cv/<arm>-soup/. Given
several arms, every arm's runs of those seeds are averaged together: `<arm>+<arm>...-soup`.

With --renorm, the average's BatchNorm running statistics are not the mean of the runs' but measured
again for the averaged weights, on one epoch of the training batches the first run was trained on
(augmented, outliers included; training.loop.recompute_norms), as weight averaging over epochs does:
arm `<arm>-soup-bn`. The mean of two runs' statistics need not be the statistics of their mean weights.

With --ensemble, the runs are not averaged but kept side by side: a run directory that answers as their
mean (training.run.save_ensemble: mean softmax, mean cosine), k times one model's inference: arm
`<arm>-ens` (`-ens3` for three runs). With --runs and --out, the ensemble of those runs (a final model).

With --toward-init A (weight-space ensembling of the fine-tune and its start, WiSE-FT, Wortsman et al.
2022), each run is scored on its own with its encoder's weights moved a share A of the way back to the
self-supervised encoder it was fine-tuned from (the classifier as fine-tuned): arm `<arm>-wise<A>`.
"""

import argparse
import json
from functools import partial
from pathlib import Path

import torch
from _data import ROOT, cv_run
from cv_study import ARMS, REPORT, evaluate, init_of, write_report
from safetensors.torch import load_file

from core.artifact import write_json_atomic
from training.loop import recompute_norms
from training.run import new_run_id, read_checkpoint_info, save_ensemble, save_weights


def soup_arm(arms: list[str], seeds: list[int], renorm: bool = False, ensemble: bool = False) -> str:
    """The CV arm of the average of `arms`' runs of `seeds`: "<arm>-soup" for two runs, "<arm>-soup3" for
    three; "-bn" after it when its BatchNorm statistics are recomputed; "-ens" in place of "-soup" for
    their ensemble."""
    models = len(arms) * len(seeds)
    return "+".join(arms) + f"-{'ens' if ensemble else 'soup'}{'' if models == 2 else models}" + ("-bn" if renorm else "")


def soup_run(arms: list[str], seeds: list[int], fold: int, renorm: bool = False, ensemble: bool = False) -> Path:
    """The run directory of that average (or ensemble) for held-out `fold`: runs/cv/<soup arm>/fold<F>-seed0+1."""
    return cv_run(soup_arm(arms, seeds, renorm, ensemble), fold, "+".join(map(str, seeds)))


def soup(runs: list, out, renorm: bool = False) -> None:
    """The uniform mean of the runs' float tensors (integer ones, e.g. BatchNorm's counter, from the first);
    with `renorm`, BatchNorm statistics recomputed for the mean weights on the first run's training batches
    instead of averaged."""
    states = [load_file(run / "checkpoint" / "model.safetensors") for run in runs]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(dim=0).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}
    save_model(mean, runs[0], out, {"runs": [str(r) for r in runs], "batchnorm": "recomputed" if renorm else "averaged"})
    if renorm:
        recompute_norms(out)


def save_model(state: dict, first, out, made_of: dict) -> None:
    """A run directory `out` holding `state`, with the first run's checkpoint.json under an id of its own
    and soup.json saying how it was made."""
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    info = {**read_checkpoint_info(first), "run_id": new_run_id(out)}  # the soup's own id, not its first run's
    write_json_atomic(out / "checkpoint" / "checkpoint.json", info)
    save_weights(state, out)
    (out / "soup.json").write_text(json.dumps(made_of, indent=1))


def toward_init(run, init, share: float, out) -> None:
    """The run's weights with every encoder tensor moved `share` of the way back to `init`'s (a
    pre-training run); the classifier, the projection head and integer tensors as the run has them."""
    start = load_file(init / "checkpoint" / "model.safetensors")
    state = load_file(run / "checkpoint" / "model.safetensors")
    mixed = {k: torch.lerp(v.float(), start[k].float(), share).to(v.dtype)
             if k.startswith("encoder.") and v.is_floating_point() else v for k, v in state.items()}
    save_model(mixed, run, out, {"runs": [str(run)], "toward": str(init), "share": share})


def score_toward_init(arm: str, seeds: list[int], folds: list[int], share: float, report: str) -> None:
    name, results = f"{arm}-wise{share:g}", {}
    if not init_of(ARMS[arm], 1):
        raise SystemExit(f"{arm} starts from random weights: --toward-init needs a pre-trained arm")
    for seed in seeds:
        for fold in folds:
            run, out = cv_run(arm, fold, seed), cv_run(name, fold, seed)
            if not (run / "cv.json").exists():
                raise SystemExit(f"unfinished run: {run}: run benchmarks/cv_study.py first")
            init = ROOT / init_of(ARMS[arm], fold)
            results[out.name] = scored(out, fold, partial(toward_init, run, init, share))
    write_report({name: results}, report)


def scored(out, fold: int, make) -> dict:
    """The CV result of the model in `out`, made by `make(out)` and scored first if it has none."""
    if not (out / "cv.json").exists():
        make(out)
        (out / "cv.json").write_text(json.dumps(evaluate(out, fold)))
    result = json.loads((out / "cv.json").read_text())
    print(out.name, {c: round(r["accuracy"], 4) for c, r in result["conditions"].items()}, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", nargs="+", help="one arm, or several whose runs are averaged together")
    parser.add_argument("--runs", nargs="+", type=Path, help="with --out: average these runs' weights, nothing else")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--folds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--report", default=REPORT, help="reports/REPORT.json and .md (as cv_study.py's)")
    parser.add_argument("--renorm", action="store_true",
                        help="recompute the average's BatchNorm statistics on its training batches (else averaged)")
    parser.add_argument("--ensemble", action="store_true", help="keep the runs side by side instead of averaging")
    parser.add_argument("--toward-init", type=float, metavar="A",
                        help="score each run of one --arm with its encoder moved a share A back to its pre-training")
    args = parser.parse_args()
    if args.ensemble and (args.renorm or args.toward_init is not None):
        parser.error("--ensemble keeps the runs' own weights: no --renorm or --toward-init")
    if args.runs or args.out:
        if not (args.runs and args.out):
            parser.error("--runs and --out go together")
        return save_ensemble(args.runs, args.out) if args.ensemble else soup(args.runs, args.out, args.renorm)
    if not args.arm:
        parser.error("give --arm (a CV arm to average by fold) or --runs with --out")
    if args.toward_init is not None:
        if len(args.arm) != 1 or not 0 <= args.toward_init <= 1:
            parser.error("--toward-init takes one --arm and a share between 0 and 1")
        return score_toward_init(args.arm[0], args.seeds, args.folds, args.toward_init, args.report)
    name, results = soup_arm(args.arm, args.seeds, args.renorm, args.ensemble), {}
    for fold in args.folds:
        runs = [cv_run(arm, fold, s) for arm in args.arm for s in args.seeds]
        missing = [str(r) for r in runs if not (r / "cv.json").exists()]
        if missing:
            raise SystemExit(f"unfinished runs: {missing}: run benchmarks/cv_study.py first")
        out = soup_run(args.arm, args.seeds, fold, args.renorm, args.ensemble)
        make = partial(save_ensemble, runs) if args.ensemble else partial(soup, runs, renorm=args.renorm)
        results[out.name] = scored(out, fold, make)
    write_report({name: results}, args.report)


if __name__ == "__main__":
    main()
