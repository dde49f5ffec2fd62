"""An "unknown" by a low top score beside the angle, by cross-validation (issue 19).

    python benchmarks/openset_score_cv.py ARM --pretrained-share 0.6 --prototype-weight 0.5 --temperature 0.4717
        [--score-weight 0 --score-temperature 1] [--frr 0.02] [--report openset_score_cv]

Known: every held-out clip of the arm's CV runs under the six recording conditions; unknown: the game sounds of
unlabeled/ (never in training). Each clip as served: its angle to the nearest prototype and that class
(cv_study.py's cv-share<S>.json), and its top score (the windows with sound voting by amplitude, then the
temperature; vote_cv.py's window cache for the known clips, the same windows computed here for the unknown ones
and kept beside it as cv-unknown<S>-w<W>-r<V>.npz). With --score-weight / --score-temperature the score is read
from windows of another prototype weight and temperature (0 and 1: the head's own top probability, the mean softmax
of an ensemble's members), while the answer, and so its correctness, stays the served one.
Two rules at the same share of known clip-conditions rejected (FRR, pooled over the conditions):
    angle   unknown iff angle > the threshold of its nearest class (openset_cv.py --per-class)
    score   ... or top score < s_min; s_min the r-quantile of the known scores, then the angles' one per-class
            quantile that makes the union reject FRR; r in RATES, the fewest unknown accepted on the fitting half
2-fold over seeds (fitted on every other seed or pair, measured on the rest, and the other way round), as
openset_cv.per_class. The rule that reads it: BENCHMARKS.md "An unknown by a low score". Writes reports/REPORT.{json,md}.
"""

import argparse
import json

import numpy as np
from _data import REPORTS, add_joint_arguments, cv_runs, encoder_tag, joint_arguments, machine
from cv_study import NOISE, clean_features
from fusion_cv import served_classes
from openset_cv import known_angles, known_nearest, load_runs, quantile_per_class, seed_halves
from vote_cv import cached_windows, clip_windows, held_out, vote

from core.activity import ActivityConfig
from core.answer import sharpen
from core.features import FrontendConfig
from training import robustness
from training.data import find_audio
from training.robustness import CONDITIONS
from training.run import load_inference_model

RATES = (0.005, 0.01, 0.015)  # the share of known clip-conditions s_min alone may reject


def top_score(log_p: np.ndarray, power: np.ndarray, temperature: float) -> float:
    """A clip's windows -> its calibrated top score, as core.answer ranks (amplitude vote, then T)."""
    return float(sharpen(vote(log_p, power, 0.0, "amplitude")[None], temperature).max())


def unknown_windows(run, share: float, pretrained: str | None, weight: float) -> dict[str, np.ndarray]:
    """{"i/log_p", "i/power"} for every clip of unlabeled/ as served by one CV run (cached beside it)."""
    path = run / f"cv-unknown{share:g}-w{weight:g}{encoder_tag(pretrained)}-r{robustness.VERSION}.npz"
    if not path.exists():
        model, info = load_inference_model(run, share, pretrained)
        frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
        classes = served_classes(model, run, frontend, activity, prototype_weight=weight)
        out = {}
        for i, (logmel, gains) in enumerate(clean_features(find_audio(NOISE), frontend)):
            out[f"{i}/log_p"], out[f"{i}/power"], _ = clip_windows(model, logmel, gains, frontend, activity, classes)
        np.savez_compressed(path, **out)
        print(f"measured {run}", flush=True)
    with np.load(path) as windows:
        return {k: windows[k] for k in windows.files}


def run_scores(run, result: dict, share, pretrained, weight, score_weight, score_temperature) -> dict:
    """One run's cv-share result with each clip's top score (from windows of prototype weight `score_weight`)
    and its served correctness (of the served `weight`) added."""
    _, labels = held_out(run)

    def clips(windows, c):  # [(log_p, power)] of the held-out clips under condition c
        return [(windows[f"{c}/{i}/log_p"], windows[f"{c}/{i}/power"]) for i in range(len(labels))]

    with np.load(cached_windows(run, share, pretrained, weight)) as windows:
        for c in CONDITIONS:
            result["conditions"][c]["served_correct"] = [bool(vote(lp, pw, 0.0, "amplitude").argmax() == y)
                                                         for (lp, pw), y in zip(clips(windows, c), labels)]
    with np.load(cached_windows(run, share, pretrained, score_weight)) as windows:
        for c in CONDITIONS:
            result["conditions"][c]["score"] = [top_score(lp, pw, score_temperature) for lp, pw in clips(windows, c)]
    unknown = unknown_windows(run, share, pretrained, score_weight)
    result["unknown_scores"] = [top_score(unknown[f"{i}/log_p"], unknown[f"{i}/power"], score_temperature)
                                for i in range(len(result["unknown_angles"]))]
    return result


def pooled(runs: list[dict], key: str) -> np.ndarray:
    return np.concatenate([r["conditions"][c][key] for r in runs for c in CONDITIONS])


def fit(runs: list[dict], frr: float, rate: float) -> tuple[np.ndarray, float]:
    """(K,) angles and s_min (-inf for rate 0) rejecting `frr` of the known clip-conditions together."""
    angles, nearest, scores = known_angles(runs, CONDITIONS), known_nearest(runs, CONDITIONS), pooled(runs, "score")
    k = len(runs[0]["labels"])
    s_min = float(np.quantile(scores, rate)) if rate else -np.inf  # rate 0: the angle alone
    low, high = 1 - frr, 1.0  # the angles' quantile: bisect until the union rejects frr
    for _ in range(40):
        q = (low + high) / 2
        rejected = ((angles > quantile_per_class(angles, nearest, q, k)[nearest]) | (scores < s_min)).mean()
        low, high = (q, high) if rejected > frr else (low, q)
    return quantile_per_class(angles, nearest, high, k), s_min


def measure(runs: list[dict], thresholds: np.ndarray, s_min: float) -> dict:
    angles, nearest, scores = known_angles(runs, CONDITIONS), known_nearest(runs, CONDITIONS), pooled(runs, "score")
    rejected = (angles > thresholds[nearest]) | (scores < s_min)
    u_angles, u_nearest, u_scores = (np.concatenate([r[k] for r in runs])
                                     for k in ("unknown_angles", "unknown_nearest", "unknown_scores"))
    accepted = (u_angles <= thresholds[u_nearest]) & (u_scores >= s_min)
    return {"unknown_accepted": float(accepted.mean()), "rejected": float(rejected.mean()),
            "answered": float((pooled(runs, "served_correct") & ~rejected).mean()),
            "top1": float(pooled(runs, "served_correct").mean())}


def chosen_rate(runs: list[dict], frr: float) -> float:
    """The rate of RATES whose s_min, with the angles fitted beside it, accepts the fewest unknown clips of `runs`."""
    return min(RATES, key=lambda r: measure(runs, *fit(runs, frr, r))["unknown_accepted"])


def two_fold(runs: list[dict], frr: float) -> dict:
    halves = seed_halves(runs)
    out = {"angle": [], "score": [], "rate": []}
    for fit_half, test_half in (halves, halves[::-1]):
        out["angle"].append(measure(test_half, *fit(fit_half, frr, 0.0)))
        rate = chosen_rate(fit_half, frr)
        out["score"].append(measure(test_half, *fit(fit_half, frr, rate)))
        out["rate"].append(rate)
    return {rule: {k: float(np.mean([m[k] for m in out[rule]])) for k in out[rule][0]} for rule in ("angle", "score")
            } | {"rates": out["rate"]}


def markdown(report: dict) -> str:
    return table(report, f"An unknown by a low top score beside the angle; the score: the top probability at prototype "
                         f"weight {report.get('score_weight', report['prototype_weight'])}, temperature "
                         f"{report.get('score_temperature', report['temperature'])}", "angle per class or low score",
                 f"s_min {report['s_min']:.4f}")


def table(report: dict, title: str, score_rule: str, threshold: str) -> str:
    """The report as markdown: both rules, two-fold and in sample."""
    lines = [f"{title} ({report['arm']}, {report['runs']} runs, {machine()}); FRR {report['frr']:.0%} of the known "
             f"clip-conditions pooled over {len(CONDITIONS)} conditions.", "",
             "| rule | unknown accepted | known rejected | answered | top-1 |", "|---|---|---|---|---|"]
    for name, rule in (("angle", "angle per class"), ("score", score_rule)):
        for where in ("two_fold", "in_sample"):
            m = report[where][name]
            lines.append(f"| {rule}, {where.replace('_', '-')} | {m['unknown_accepted']:.1%} | {m['rejected']:.1%} "
                         f"| {m['answered']:.1%} | {m['top1']:.1%} |")
    lines += ["", f"Rates chosen on the fitting halves: {report['two_fold']['rates']}; in sample (all runs, rate "
              f"{report['rate']}): {threshold}, angles {np.round(report['thresholds_rad'], 3).tolist()}."]
    return "\n".join(lines) + "\n"


def evaluate(runs: list[dict], frr: float) -> dict:
    """Both rules fitted and measured on `runs`: two-fold over their seeds, and in sample at the rate chosen there."""
    rate = chosen_rate(runs, frr)
    thresholds, s_min = fit(runs, frr, rate)
    return {"runs": len(runs), "frr": frr, "machine": machine(), "two_fold": two_fold(runs, frr),
            "in_sample": {"angle": measure(runs, *fit(runs, frr, 0.0)), "score": measure(runs, thresholds, s_min)},
            "rate": rate, "s_min": s_min, "thresholds_rad": thresholds.tolist(), "labels": runs[0]["labels"]}


def write(report: dict, name: str, text: str) -> None:
    (REPORTS / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (REPORTS / f"{name}.md").write_text(text)
    print(text)


def arguments(doc: str) -> argparse.ArgumentParser:
    """The options of a study of the served answer: the arm, its joint embedding, prototype weight, temperature, FRR."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("arm")
    add_joint_arguments(parser, "the joint embedding, as the model is served")
    parser.add_argument("--prototype-weight", type=float, required=True)
    parser.add_argument("--temperature", type=float, required=True, help="the served model's (openset.json)")
    parser.add_argument("--frr", type=float, default=0.02)
    return parser


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--score-weight", type=float, help="the score's prototype weight (default: the served)")
    parser.add_argument("--score-temperature", type=float, help="the score's temperature (default: the served)")
    parser.add_argument("--report", default="openset_score_cv")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    score_weight = args.prototype_weight if args.score_weight is None else args.score_weight
    score_temperature = args.temperature if args.score_temperature is None else args.score_temperature
    runs = [run_scores(path, result, share, pretrained, args.prototype_weight, score_weight, score_temperature)
            for path, result in zip(cv_runs(args.arm), load_runs(args.arm, share, pretrained))]
    report = {"arm": args.arm, **evaluate(runs, args.frr), "prototype_weight": args.prototype_weight,
              "temperature": args.temperature, "pretrained_share": share, "score_weight": score_weight,
              "score_temperature": score_temperature}
    write(report, args.report, markdown(report))


if __name__ == "__main__":
    main()
