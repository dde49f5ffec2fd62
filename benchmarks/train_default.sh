#!/usr/bin/env bash
# Trains and exports the shipped model (models/default) with the project's own commands.
# 1) the recipe comparison by 4-fold cross-validation (benchmarks/cv_study.py, resumable), which
#    chose ARM; 2) the open-set threshold from those CV runs; 3) the final run on folds 1-4;
# 4) export, with the open set and the CV figures in the manifest. Every step resumes or skips.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
BIN=.venv/bin
ARM=${ARM:-ce-robust}
SEED=${SEED:-0}
$BIN/python benchmarks/cv_study.py --seeds 0
$BIN/python benchmarks/openset_cv.py --arm "$ARM"
SETS=$($BIN/python -c "import sys; sys.path.insert(0, 'benchmarks'); import cv_study; print(' '.join(cv_study.ARMS['$ARM']))")
ARGS=(); for s in $SETS; do ARGS+=(--set "$s"); done
$BIN/soundarc train finetune --config configs/default-model.yaml "${ARGS[@]}" --set seed="$SEED" \
    --set "train_folds=[1,2,3,4]" --set "val_folds=[]" --out "runs/default-$ARM"
$BIN/python benchmarks/finalise_default.py "runs/default-$ARM" "$ARM" models/default
