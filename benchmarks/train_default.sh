#!/usr/bin/env bash
# Trains and exports the shipped model (models/default) with the project's own commands.
# 1) validation run: folds 1-3 -> fold 4 (the figure recorded in the manifest);
# 2) final run: folds 1-4; 3) export with validation; 4) evaluation of the validation run.
# Resumable: each run directory resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
BIN=.venv/bin
RECIPE=(--config configs/default-model.yaml --set loss=ce --set seed=0)
$BIN/soundarc train finetune "${RECIPE[@]}" --out runs/default-val
$BIN/soundarc train eval runs/default-val > /dev/null
$BIN/soundarc train finetune "${RECIPE[@]}" --set "train_folds=[1,2,3,4]" --set "val_folds=[]" --out runs/default-final
$BIN/python benchmarks/finalise_default.py runs/default-final runs/default-val models/default
