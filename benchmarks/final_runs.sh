#!/usr/bin/env bash
# The final runs of ARM on folds 1-4, one per seed of FINAL_SEEDS (as benchmarks/train_default.sh trains them),
# alone: for a session that has the CV reports already and needs only the final runs. Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
BIN=${BIN:-.venv/bin}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
FINAL_SEEDS=${FINAL_SEEDS:-"0 1"}
STUDY="import sys; sys.path.insert(0, 'benchmarks'); import cv_study"
ESC10=$($BIN/python -c "$STUDY; print(cv_study.ESC10)")
for seed in $FINAL_SEEDS; do
  args=()
  for s in $($BIN/python -c "$STUDY; print(' '.join(cv_study.ARMS['$ARM']))"); do args+=(--set "$s"); done
  $BIN/soundarc train finetune --config configs/default-model.yaml --set labeled="$ESC10" "${args[@]}" --set seed="$seed" \
      --set "train_folds=[1,2,3,4]" --set "val_folds=[]" --out "runs/default-$ARM-seed$seed"
done
