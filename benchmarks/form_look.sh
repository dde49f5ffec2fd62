#!/usr/bin/env bash
# The form that ships, second look (BENCHMARKS.md "Which form ships", rule runs/notes/rule-form2.md): per fold,
# the ensembles of the shipped recipe's CV runs, seeds 0+1 and 2+3 (two-seed) and 0+1+2+3 (four-seed), each answered
# as served against the single runs of the same seeds, clip by clip, and the four-seed against the two-seed.
# Resumable: finished ensembles and window caches are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
SERVED=(--pretrained-share 0.6 --prototype-weight 0.5)
for seeds in "0 1" "2 3" "0 1 2 3"; do
  # shellcheck disable=SC2086
  $PY benchmarks/soup_cv.py --arm "$ARM" --seeds $seeds --ensemble --report cv_study_form_epyc
done
$PY benchmarks/vote_cv.py "$ARM-ens:0+1,2+3" "$ARM:0,1,2,3" "${SERVED[@]}" --versus --report vote_cv_form2
$PY benchmarks/vote_cv.py "$ARM-ens4:0+1+2+3" "$ARM:0,1,2,3" "${SERVED[@]}" --versus --report vote_cv_form4
$PY benchmarks/vote_cv.py "$ARM-ens4:0+1+2+3" "$ARM-ens:0+1,2+3" "${SERVED[@]}" --versus --report vote_cv_form42
