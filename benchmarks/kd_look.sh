#!/usr/bin/env bash
# The third look at distillation (BENCHMARKS.md "Distilling the ensemble into one run"), whole, on this
# machine's own pre-training draw: the shipped recipe's seeds 0+1 (the teachers, as their fold's
# ensemble), then per seed 1-3 the shipped run and the distilled run, then the 12 pairs as served.
# Resumable: finished runs are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=.venv/bin/python
SHIPPED=ssl-acl-rc-acl-robust-oe-eq
KD=$SHIPPED-kd
$PY benchmarks/cv_study.py --arms "$SHIPPED" --seeds 0 1 --report cv_study_epyc2  # pre-trains ssl-acl-rc first
$PY benchmarks/soup_cv.py --arm "$SHIPPED" --seeds 0 1 --ensemble --report cv_study_epyc2  # the teachers
for seed in 1 2 3; do
  $PY benchmarks/cv_study.py --arms "$SHIPPED" --seeds "$seed" --report cv_study_epyc2
  $PY benchmarks/cv_study.py --arms "$KD" --seeds "$seed" --report cv_study_kd_epyc2
done
$PY benchmarks/vote_cv.py "$KD:1,2,3" "$SHIPPED:1,2,3" --pretrained-share 0.6 --prototype-weight 0.5 --versus \
    --report vote_cv_kd123
