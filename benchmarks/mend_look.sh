#!/usr/bin/env bash
# The noise's floor and the compander's place mended (BENCHMARKS.md): the recipe's overrides trained with the
# mended training.augment, seeds SEEDS (1 2; 1 2 3 for the third look) on this machine's pre-training draw, then
# the pairs as served against the -floor runs of the same seeds (benchmarks/floor_look.sh made them), which
# differ by the mends alone.
# Resumable: finished runs are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
BASE=ssl-acl-rc-acl-robust-oe-eq-floor
SEEDS=${SEEDS:-1 2}
LIST=${SEEDS// /,}
for seed in $SEEDS; do
  $PY benchmarks/cv_study.py --arms ssl-acl-rc-acl-robust-oe-eq-mend --seeds "$seed" --report cv_study_mend_epyc2
done
$PY benchmarks/vote_cv.py ssl-acl-rc-acl-robust-oe-eq-mend:$LIST "$BASE:$LIST" --pretrained-share 0.6 \
    --prototype-weight 0.5 --versus --report "vote_cv_mend${SEEDS// /}"
