#!/usr/bin/env bash
# The final runs of ARM on folds 1-4, one per seed of FINAL_SEEDS: `benchmarks/final_runs.sh [SETTING...]`, each
# SETTING a further key=value (a distilled arm's final teacher; its CV teacher, teacher=runs/cv/..., is left out).
# benchmarks/train_default.sh trains its final runs with it; alone, for a session that has the CV reports already
# and needs only the final runs. Resumable.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
BIN=${BIN:-.venv/bin}
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
FINAL_SEEDS=${FINAL_SEEDS:-"0 1"}
STUDY="import sys; sys.path.insert(0, 'benchmarks'); import cv_study"
ESC10=$($BIN/python -c "$STUDY; print(cv_study.ESC10)")  # ../shared/data/esc10 or where SOUNDARC_DATA says
args=()
for s in $($BIN/python -c "$STUDY; print(' '.join(cv_study.ARMS['$ARM']))") "$@"; do
  [[ $s == teacher=runs/cv/* ]] || args+=(--set "$s")
done
for seed in $FINAL_SEEDS; do
  $BIN/soundarc train finetune --config configs/default-model.yaml --set labeled="$ESC10" "${args[@]}" --set seed="$seed" \
      --set "train_folds=[1,2,3,4]" --set "val_folds=[]" --out "runs/default-$ARM-seed$seed"
done
