#!/usr/bin/env bash
# An ensemble of two recipes (rule runs/notes/rule-mixed-ens.md): per held-out fold, the shipped recipe's seed 0 beside
# the attention-pooling arm's seed 0, answered as served, clip by clip against the shipped form (seeds 0+1).
# Eval only (the runs exist); resumable: finished ensembles and window caches are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
$PY benchmarks/soup_cv.py --arm "$ARM" "$ARM-attn" --seeds 0 --ensemble --report cv_study_form_redraw
$PY benchmarks/vote_cv.py "$ARM+$ARM-attn-ens:0" "$ARM-ens:0+1" --pretrained-share 0.6 --prototype-weight 0.5 \
  --versus --report vote_cv_mixed
