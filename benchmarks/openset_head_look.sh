#!/usr/bin/env bash
# An unknown by the head's own low top probability beside the angle (BENCHMARKS.md "An unknown by the head's own
# score", rule runs/notes/rule-openset-head.md): this draw's shipped recipe, seeds 1-3 trained beside seed 0 (which must
# be there), on the four folds; their per-fold
# ensembles 0+1 and 2+3 scored with the joint embedding, then openset_score_cv.py with the head alone as the score.
# Resumable: finished runs, ensembles, scores and window caches are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
$PY benchmarks/cv_study.py --arms "$ARM" --seeds 1 2 3 --report cv_study_redraw_s123
for seeds in "0 1" "2 3"; do
  # shellcheck disable=SC2086
  $PY benchmarks/soup_cv.py --arm "$ARM" --seeds $seeds --ensemble --report cv_study_form_redraw
done
# the ensembles' joint-embedding scores (cv-share0.6.json; cv_study.py --pretrained-share takes integer seeds only)
$PY - "$ARM-ens" <<'PY'
import sys
sys.path.insert(0, "benchmarks")
from _data import cv_result, cv_runs, fold_of
from cv_study import evaluate
from core.artifact import write_json_atomic
for run in cv_runs(sys.argv[1]):
    if not cv_result(run, 0.6).exists():
        write_json_atomic(cv_result(run, 0.6), evaluate(run, fold_of(run), 0.6))
        print(f"scored {run}", flush=True)
PY
$PY benchmarks/openset_score_cv.py "$ARM-ens" --pretrained-share 0.6 --prototype-weight 0.5 --temperature 0.4717 \
  --score-weight 0 --score-temperature 1 --report openset_head_cv
