"""The look that led to the clip gate's rule: enrolled classes by a clip-level gate beside the window-level one (issue 19).

    python benchmarks/enrol_clip_gate.py
        (after enrol_bench.py --arm ARM --pretrained-share 0.6 --prototype-weight 0.5 --vote amplitude)

On the leave-out models enrol_bench.py exported (reports/tmp/leaveout-ARM-PAIR_share0.6-model), 20 draws of 1 and 5
clips a class as enrol_bench.py draws them, answered by core.answer with the window gate (an enrolled class takes a
window's share only where it beats the top built-in class by the margin) and with the clip gate (also the enrolled class
where the clip embedding is closer to its prototype by the margin than to every other prototype), at margins 0 and -0.01.
First run with its own copy of the clip gate, the nearest prototype at any margin (BENCHMARKS.md's table: at margin
-0.01 that gate, not core.answer's); this form was not run again, its models being gone.
Prints left-out clips named / known classes' fold 4, means over the five pairs.
"""

from dataclasses import replace

import numpy as np
from _data import ROOT, require_data
from enrol_bench import PAIRS, answered, clip_outputs, enrolled_draw

from core.activity import voting_windows
from core.answer import clip_embedding
from core.artifact import load_artifact
from core.runtime import RuntimeConfig, create_runtime
from training.data import scan_labeled

ARM = "ssl-acl-rc-acl-robust-oe-eq"


def pair_results(pair, clips, labels, folds, results: dict) -> None:
    artifact = load_artifact(ROOT / "reports" / "tmp" / f"leaveout-{ARM}-{'-'.join(pair)}_share0.6-model")
    outputs = clip_outputs(create_runtime(artifact, RuntimeConfig("cpu")), [c.path for c in clips])
    embeddings = np.stack([clip_embedding(e[voting_windows(clip.active)]) for _, e, clip in outputs])  # (N, D)
    known = np.flatnonzero(~np.isin(labels, pair) & (folds == 4))
    rng = np.random.default_rng(0)
    for shots in (1, 5):
        for _ in range(20):
            classes, test = enrolled_draw(artifact, embeddings, labels, list(pair), shots, rng)
            for margin in (0.0, -0.01):
                at = replace(classes, builtin=replace(classes.builtin, enrol_margin=margin, one_shot_margin=None))
                for name, idx in (("left-out", test), ("known", known)):
                    for rule, gate in (("service", "window"), ("clip gate", "clip")):
                        gated = replace(at, builtin=replace(at.builtin, enrol_gate=gate))
                        answer = answered(gated, [outputs[i] for i in idx], artifact)
                        results.setdefault((shots, margin, rule, name), []).append(float((answer == labels[idx]).mean()))


def main() -> None:
    clips, _ = scan_labeled(require_data("esc10"))
    labels, folds = np.array([c.label for c in clips]), np.array([c.fold for c in clips])
    results = {}
    for pair in PAIRS:
        pair_results(pair, clips, labels, folds, results)
    print("| clips | margin | rule | left-out named | known, fold 4 |\n|---|---|---|---|---|")
    for shots in (1, 5):
        for margin in (0.0, -0.01):
            for rule in ("service", "clip gate"):
                named, known = (100 * np.mean(results[(shots, margin, rule, k)]) for k in ("left-out", "known"))
                print(f"| {shots} | {margin:g} | {rule} | {named:.1f} % | {known:.1f} % |")


if __name__ == "__main__":
    main()
