"""Sound-event parameters by cross-validation (issue 14), on soundscapes of real clips.

    python benchmarks/events_cv.py --arm acl-robust [--seeds 0 1 | 0+1] [--scenes-per-run 26]
        [--pretrained-share S [--pretrained runs/pretrain/NAME]] [--prototype-weight W] [--temperature T]

For each CV run of an arm (benchmarks/cv_study.py: trained on three of folds 1-4), soundscapes are
composed from its held-out fold: 30 s of real background (clips of unlabeled/, never in training,
looped, 25 dB below the events) with 3 held-out clips placed at random times at least 1 s apart.
Each clip is cut to its sound, the frames within 20 dB of its loudest (core.activity's levels), and
that span is its reference event. The run's model scores each soundscape's windows as the service
does (log-mel, 1 s windows every 0.5 s, activity, softmax); core.events turns them into events for
every candidate parameter set; sed_eval scores them: segment-based F1 (1 s segments) and
event-based F1 (onset collar 200 ms, offset collar 200 ms or 20 % of the event). The choice (rule
stated before the results): among the parameter sets within TIE_F1 of the best mean event-based F1
over the runs, the one that finds the most short reference events (under SHORT_S: one bark, one
sneeze, which the mostly long references let event F1 overlook), then the best event F1. With
--prototype-weight, the window probabilities are those of the built-in classes blended with their
prototypes in the served embedding (--pretrained-share; core.answer.class_logits, benchmarks/fusion_cv.py);
with --temperature, sharpened by it (benchmarks/calibration_cv.py), as the model serves them.
Writes reports/events_cv.json and reports/events_cv.md.
"""

import argparse
import itertools
import json
import warnings

import numpy as np
import torch
from _data import REPORTS, add_joint_arguments, cv_runs, joint_arguments, require_data
from fusion_cv import served_classes

from core.activity import ActivityConfig, frame_gains_db, frame_levels, window_activity_of
from core.answer import window_probabilities
from core.audio import decode
from core.classes import ClassSet
from core.events import EventConfig, detect
from core.features import FrontendConfig, frame_seconds, log_mel, patches
from training.data import find_audio, scan_labeled
from training.run import load_inference_model

ESC10 = require_data("esc10")
BACKGROUND = require_data("unlabeled")
SCENE_S, PER_SCENE, MIN_GAP_S, BACKGROUND_DB, REFERENCE_DB = 30.0, 3, 1.0, -25.0, 20.0
SHORT_S = 1.5  # a reference event shorter than this is "short" (one bark, one sneeze)
TIE_F1 = 0.01  # event F1 within this of the best counts as a tie, which short-event recall breaks
GRID = {"on": [0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], "off": [0.05, 0.1, 0.2, 0.3, 0.4], "median_windows": [1, 3, 5, 7],
        "min_duration_s": [0.25, 0.5, 1.0, 1.5, 2.0], "max_gap_s": [0.25, 0.5, 1.0, 1.5, 2.0], "edge_db": [0.0, 20.0]}


def sound_span(y: np.ndarray, frontend: FrontendConfig) -> tuple[int, int]:
    """The samples from the first to the last frame within REFERENCE_DB of the clip's loudest."""
    levels = frame_levels(log_mel(y, frontend), frontend, frame_gains_db(y, frontend))
    loud = np.flatnonzero(levels > levels.max() - REFERENCE_DB)
    return int(loud[0] * frontend.hop_length), int(min(len(y), (loud[-1] + 1) * frontend.hop_length))


def rms_db(y: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)) + 1e-12)


def compose(clips, background: np.ndarray, rng, frontend) -> tuple[np.ndarray, list[dict]]:
    """clips: [(label, waveform cut to its sound)] -> a SCENE_S soundscape and its reference events."""
    sr = frontend.sample_rate
    n = int(SCENE_S * sr)
    scene = np.resize(background, n).astype(np.float32)
    level = np.mean([rms_db(y) for _, y in clips])
    scene *= 10 ** ((level + BACKGROUND_DB - rms_db(scene)) / 20)
    lengths = [len(y) / sr for _, y in clips]
    slack = SCENE_S - sum(lengths) - MIN_GAP_S * (len(clips) + 1)
    cuts = np.sort(rng.uniform(0, max(slack, 0), len(clips)))  # random spacing, in order
    reference, t = [], MIN_GAP_S
    for (label, y), extra, previous in zip(clips, cuts, np.concatenate([[0], cuts[:-1]])):
        t += extra - previous
        start = int(t * sr)
        scene[start:start + len(y)] += y[: n - start]
        reference.append({"event_label": label, "onset": start / sr, "offset": min(n, start + len(y)) / sr})
        t += len(y) / sr + MIN_GAP_S
    return scene, reference


@torch.no_grad()
def window_probs(model, y: np.ndarray, frontend, activity, classes: ClassSet | None) -> tuple:
    """(N, C) served window probabilities, (N,) activity, (N,) start times (s) of a waveform's windows and
    (F,) frame levels (dB), as the service computes them (`classes`: the built-in classes with the
    prototype weight and temperature, None: the head's softmax)."""
    logmel = log_mel(y, frontend)
    windows, starts = patches(logmel, frontend)
    logits, embeddings = (t.numpy() for t in model(torch.from_numpy(windows)[:, None]))
    probs = window_probabilities(logits, embeddings, classes)
    gains = frame_gains_db(y, frontend)
    active = window_activity_of(logmel, frontend, activity, gains)
    levels = frame_levels(logmel, frontend, gains)
    return probs, active, frame_seconds(starts, frontend), levels


def f1_scores(references: list[list[dict]], estimates: list[list[dict]], labels) -> dict:
    import sed_eval

    segment = sed_eval.sound_event.SegmentBasedMetrics(event_label_list=list(labels), time_resolution=1.0)
    event = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(labels), t_collar=0.2,
                                                   percentage_of_length=0.2)
    for i, (ref, est) in enumerate(zip(references, estimates)):
        ref = [{**e, "filename": f"s{i}"} for e in ref]
        est = [{**e, "filename": f"s{i}"} for e in est]
        segment.evaluate(ref, est)
        event.evaluate(ref, est)
    f1 = {"segment_f1": segment.results_overall_metrics()["f_measure"]["f_measure"],
          "event_f1": event.results_overall_metrics()["f_measure"]["f_measure"]}
    return {k: 0.0 if np.isnan(v) else float(v) for k, v in f1.items()}  # nan: no event found, so none right


def short_recall(references: list[list[dict]], estimates: list[list[dict]]) -> tuple[int, int]:
    """(found, count) of the reference events shorter than SHORT_S: found when an estimated event of
    its class overlaps it (what event F1 hides when most references are long)."""
    found = count = 0
    for ref, est in zip(references, estimates):
        for r in ref:
            if r["offset"] - r["onset"] < SHORT_S:
                count += 1
                found += any(e["event_label"] == r["event_label"] and e["onset"] < r["offset"] and e["offset"] > r["onset"]
                             for e in est)
    return found, count


def choose(table: list[dict]) -> dict:
    """The rule: within TIE_F1 of the best mean event F1, the most short events found, then the best F1."""
    ties = [row for row in table if row["event_f1"] >= table[0]["event_f1"] - TIE_F1]
    return max(ties, key=lambda row: (row["short_recall"], row["event_f1"]))


def candidates() -> list[EventConfig]:
    return [EventConfig(**dict(zip(GRID, values))) for values in itertools.product(*GRID.values())
            if values[1] <= values[0]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", required=True)
    parser.add_argument("--scenes-per-run", type=int, default=26)
    parser.add_argument("--seed", type=int, default=0, help="the soundscapes' draw")
    parser.add_argument("--seeds", nargs="+", help="the CV runs of these training seeds (default: all; an ensemble's: 0+1)")
    add_joint_arguments(parser, "serve each run with the joint embedding")
    parser.add_argument("--prototype-weight", type=float, default=0.0, help="the built-in classes' prototype weight")
    parser.add_argument("--temperature", type=float, default=1.0, help="the served scores' temperature")
    args = parser.parse_args()
    share, pretrained = joint_arguments(parser, args)
    warnings.filterwarnings("ignore")
    runs = [run / "cv.json" for run in sorted(r for s in args.seeds or [None] for r in cv_runs(args.arm, s))]
    if not runs:
        raise SystemExit(f"no CV runs of {args.arm}: run benchmarks/cv_study.py --arms {args.arm}")
    rng = np.random.default_rng(args.seed)
    clips, names = scan_labeled(ESC10)
    background = [decode(p, FrontendConfig().sample_rate) for p in find_audio(BACKGROUND)[:60]]
    configs = candidates()
    per_run = []
    for cv_file in runs:
        run = cv_file.parent
        fold = json.loads(cv_file.read_text())["fold"]
        model, info = load_inference_model(run, share, pretrained)
        frontend, activity = FrontendConfig.from_dict(info["frontend"]), ActivityConfig.from_dict(info["activity"])
        classes = (served_classes(model, run, frontend, activity, args.prototype_weight, args.temperature)
                   if args.prototype_weight or args.temperature != 1.0 else None)
        held = [c for c in clips if c.fold == fold]
        order = rng.permutation(len(held))
        scenes = []
        for s in range(min(args.scenes_per_run, len(held) // PER_SCENE)):
            picked = [held[i] for i in order[s * PER_SCENE:(s + 1) * PER_SCENE]]
            cut = []
            for clip in picked:
                y = decode(clip.path, frontend.sample_rate)
                a, b = sound_span(y, frontend)
                cut.append((clip.label, y[a:b]))
            scene, reference = compose(cut, background[rng.integers(len(background))], rng, frontend)
            scenes.append((window_probs(model, scene, frontend, activity, classes), reference))
        window_s = frontend.patch_seconds
        references = [ref for _, ref in scenes]
        result = {"run": run.name, "fold": fold, "scenes": len(scenes), "configs": []}
        for cfg in configs:
            estimates = [[{"event_label": e.label, "onset": e.start_s, "offset": e.end_s}
                          for e in detect(p, act, st, window_s, names, cfg, lv if cfg.edge_db else None, frontend)]
                         for (p, act, st, lv), _ in scenes]
            found, short = short_recall(references, estimates)
            result["configs"].append({**cfg.to_dict(), **f1_scores(references, estimates, names),
                                      "short_found": found, "short_events": short})
        per_run.append(result)
        print(f"{run.name}: {len(scenes)} soundscapes, best event F1 "
              f"{max(c['event_f1'] for c in result['configs']):.3f}", flush=True)
    write_report(args.arm, per_run, configs, {"pretrained_share": share, "pretrained": pretrained,
                                              "prototype_weight": args.prototype_weight, "temperature": args.temperature})


def write_report(arm: str, per_run: list[dict], configs: list[EventConfig], served: dict) -> None:
    """reports/events_cv.{json,md}; `served`: how the runs were served (joint embedding, prototype weight,
    temperature)."""
    table = []
    for i, cfg in enumerate(configs):
        event = np.array([r["configs"][i]["event_f1"] for r in per_run])
        segment = np.array([r["configs"][i]["segment_f1"] for r in per_run])
        short = sum(r["configs"][i]["short_events"] for r in per_run)
        table.append({**cfg.to_dict(), "event_f1": float(event.mean()), "event_f1_std": float(event.std()),
                      "segment_f1": float(segment.mean()), "segment_f1_std": float(segment.std()),
                      "short_recall": sum(r["configs"][i]["short_found"] for r in per_run) / max(short, 1),
                      "short_events": short})
    table.sort(key=lambda row: -row["event_f1"])
    default = next(row for row in table if EventConfig.from_dict(row) == EventConfig())
    chosen = choose(table)
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "events_cv.json").write_text(json.dumps({
        "arm": arm, **served,
        "runs": [{k: r[k] for k in ("run", "fold", "scenes")} for r in per_run],
        "protocol": {"scene_s": SCENE_S, "clips_per_scene": PER_SCENE, "min_gap_s": MIN_GAP_S,
                     "background_db": BACKGROUND_DB, "reference_db": REFERENCE_DB,
                     "segment_s": 1.0, "collar_s": 0.2, "offset_share": 0.2, "tie_f1": TIE_F1, "short_s": SHORT_S},
        "chosen": {k: chosen[k] for k in EventConfig().to_dict()}, "chosen_row": chosen, "defaults": default,
        "table_note": f"the 20 best of {len(table)} parameter sets, by mean event F1", "table": table[:20]}, indent=1))
    unsharpened = next(row for row in table if row["edge_db"] == 0.0)
    lines = ["| parameters | on | off | median | min dur (s) | max gap (s) | edge (dB) | event F1 | segment F1 | "
             f"short events found (< {SHORT_S:g} s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, row in (("chosen", chosen), ("best event F1", table[0]), ("best without sharpened edges", unsharpened),
                       ("the code's defaults", default),
                       ("best with a minimum of 1 s or less", next(r for r in table if r["min_duration_s"] <= 1.0))):
        lines.append(f"| {label} | {row['on']} | {row['off']} | {row['median_windows']} | {row['min_duration_s']} | "
                     f"{row['max_gap_s']} | {row['edge_db']:g} | {100 * row['event_f1']:.1f} ± "
                     f"{100 * row['event_f1_std']:.1f} | {100 * row['segment_f1']:.1f} ± {100 * row['segment_f1_std']:.1f} | "
                     f"{100 * row['short_recall']:.0f} % of {row['short_events']} |")
    (REPORTS / "events_cv.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
