#!/usr/bin/env bash
# Band centring as an ensemble member (BENCHMARKS.md, rule runs/notes/rule-bc.md): the recipe with band_centring=true,
# seeds SEEDS (1 to screen; 1 2 for the full look) on this machine's pre-training draw, paired as served with the -mend
# runs of the same seeds (the same code); with seeds 1 2 also the ensembles bc 1+2, mend 1+2 and the mixed mend s + bc s.
# Resumable: finished runs and ensembles are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-1}
LIST=${SEEDS// /,}
BC=ssl-acl-rc-acl-robust-oe-eq-bc
MEND=ssl-acl-rc-acl-robust-oe-eq-mend
SERVED=(--pretrained-share 0.6 --prototype-weight 0.5)
for seed in $SEEDS; do
  $PY benchmarks/cv_study.py --arms "$BC" --seeds "$seed" --report cv_study_bc_epyc
done
$PY benchmarks/vote_cv.py "$BC:$LIST" "$MEND:$LIST" "${SERVED[@]}" --versus --report "vote_cv_bc${SEEDS// /}"
[ "$SEEDS" = "1 2" ] || exit 0
for arm in "$BC" "$MEND"; do
  $PY benchmarks/soup_cv.py --arm "$arm" --seeds 1 2 --ensemble --report cv_study_bc_epyc
done
for seed in 1 2; do
  $PY benchmarks/soup_cv.py --arm "$MEND" "$BC" --seeds "$seed" --ensemble --report cv_study_bc_epyc
done
$PY benchmarks/vote_cv.py "$BC-ens:1+2" "$MEND-ens:1+2" "${SERVED[@]}" --versus --report vote_cv_bc_ens
$PY benchmarks/vote_cv.py "$MEND+$BC-ens:1,2" "$MEND-ens:1+2" "${SERVED[@]}" --versus --report vote_cv_bc_mixed
