#!/usr/bin/env bash
# Label smoothing (BENCHMARKS.md, rule runs/notes/rule-ls.md): the recipe with label_smoothing=0.1, seeds SEEDS
# (1 to screen; 1 2 3 for the full look) on this machine's pre-training draw, then the pairs as served against the
# -mend runs of the same seeds (benchmarks/mend_look.sh made them), which differ by the smoothing alone.
# Resumable: finished runs are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-1}
LIST=${SEEDS// /,}
for seed in $SEEDS; do
  $PY benchmarks/cv_study.py --arms ssl-acl-rc-acl-robust-oe-eq-ls --seeds "$seed" --report cv_study_ls_epyc
done
$PY benchmarks/vote_cv.py ssl-acl-rc-acl-robust-oe-eq-ls:$LIST ssl-acl-rc-acl-robust-oe-eq-mend:$LIST \
    --pretrained-share 0.6 --prototype-weight 0.5 --versus --report "vote_cv_ls${SEEDS// /}"
