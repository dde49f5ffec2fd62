#!/usr/bin/env bash
# The low-pass's floor mended (BENCHMARKS.md): the shipped recipe's overrides trained with the mended
# training.augment.band_limit, seeds 1-3 on this machine's pre-training draw, then the 12 pairs as served
# against the shipped recipe's runs of the same seeds (which must exist: benchmarks/kd_look.sh made them).
# Resumable: finished runs are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
SHIPPED=ssl-acl-rc-acl-robust-oe-eq
for seed in 1 2 3; do
  $PY benchmarks/cv_study.py --arms "$SHIPPED-floor" --seeds "$seed" --report cv_study_floor_epyc2
done
$PY benchmarks/vote_cv.py "$SHIPPED-floor:1,2,3" "$SHIPPED:1,2,3" --pretrained-share 0.6 --prototype-weight 0.5 \
    --versus --report vote_cv_floor123
