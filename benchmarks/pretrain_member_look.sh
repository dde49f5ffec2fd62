#!/usr/bin/env bash
# A member of another pre-training (rule runs/notes/rule-pretrain-member.md): the shipped recipe fine-tuned from a second
# draw of its pre-training (ssl-acl-rc-s1, seed 1), seed 0 on each fold; then per held-out fold its ensemble with the
# shipped recipe's seed 0 (the joint embedding joins the first run's encoder, as served), clip by clip against the
# shipped form (seeds 0+1 of one pre-training). Resumable: finished runs, ensembles and window caches are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
OTHER=ssl-acl-rc-s1-acl-robust-oe-eq
$PY benchmarks/cv_study.py --arms "$OTHER" --seeds 0 --report cv_study_redraw
$PY benchmarks/soup_cv.py --arm "$ARM" "$OTHER" --seeds 0 --ensemble --report cv_study_form_redraw
$PY benchmarks/vote_cv.py "$ARM+$OTHER-ens:0" "$ARM-ens:0+1" --pretrained-share 0.6 --prototype-weight 0.5 \
  --versus --report vote_cv_pretrain_member
