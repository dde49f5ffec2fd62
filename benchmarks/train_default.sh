#!/usr/bin/env bash
# Trains and exports the shipped model (models/default) with the project's own commands.
# 1) the recipe comparison by 4-fold cross-validation (benchmarks/cv_study.py, resumable; an arm
#    fine-tuned from a self-supervised encoder pre-trains it first), which chose ARM by its rule
#    (BENCHMARKS.md); 2) the open-set threshold, the prototype weight of the built-in classes, and at
#    that weight (and the vote of a clip's windows) the temperature of the scores and the sound-event parameters (on the CV runs in the form
#    that ships: single runs, or per fold those of FINAL_SEEDS averaged or side by side) and the enrolment
#    margins (from five clips, and for one) and gate, and the int8 check, from the CV runs of ARM (served
#    with the joint embedding of SHARE, as the model will be: the fine-tuned encoder beside the
#    self-supervised encoder PRETRAINED, pre-trained first if missing; empty: the one ARM was
#    fine-tuned from); 3) the final run(s) on folds 1-4 (several: averaged, or an ensemble); 4) export, with the joint embedding,
#    the open set, the temperature, the event parameters and the CV figures in the manifest; 5) the int8
#    variant for CPUs.
#    A distilled ARM (cv_study.teacher_of) trains its teacher arm's CV runs and their per-fold ensembles
#    first, and its final run learns from the ensemble of the teacher arm's final runs.
#    Every training step resumes or skips; the averaging, export and int8 steps run again (seconds).
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
BIN=.venv/bin
$BIN/pip install --quiet -e '.[bench]'  # sed_eval for events_cv.py
ARM=${ARM:-ssl-acl-rc-acl-robust-oe-eq}
FINAL_SEEDS=${FINAL_SEEDS:-"0 1"}  # the shipped model: an ensemble of the runs of these seeds (BENCHMARKS.md, "Which form ships")
FORM=${FORM:-ensemble}  # several FINAL_SEEDS: an ensemble (1 more encoder per run), or their weights averaged
case "$FORM" in average) ENSEMBLE=() ;; ensemble) ENSEMBLE=(--ensemble) ;; *) echo "FORM is average or ensemble" >&2; exit 2 ;; esac
CV_SEEDS=${CV_SEEDS:-"0 1 2"}
CV_ARMS=${CV_ARMS:-$ARM}  # the other arms of the comparison: BENCHMARKS.md, each with its command
SHARE=${SHARE:-0.6}  # the pre-trained encoder's share of the joint embedding (0: the fine-tuned one alone)
PRETRAINED=${PRETRAINED-}  # ... that encoder: runs/pretrain/NAME of cv_study.PRETRAININGS ('': ARM's own)
REPORT=${REPORT:-cv_study}  # reports/REPORT.*: the CV study of this machine's pre-training (another draw elsewhere)
STUDY="import sys; sys.path.insert(0, 'benchmarks'); import cv_study"
# a distilled arm (its settings name a teacher): first the teacher arm's CV runs and their per-fold ensembles,
# which its CV runs learn from; its final run learns from the ensemble of the teacher arm's final runs
read -r TEACHER_ARM TEACHER_SEEDS <<< "$($BIN/python -c "$STUDY; t = cv_study.teacher_of('$ARM'); print(*([t[0], *t[1]] if t else ['None']))")"
if [ "$TEACHER_ARM" != None ]; then
  # shellcheck disable=SC2086
  $BIN/python benchmarks/cv_study.py --arms "$TEACHER_ARM" --seeds $TEACHER_SEEDS --report "$REPORT"
  # shellcheck disable=SC2086
  $BIN/python benchmarks/soup_cv.py --arm "$TEACHER_ARM" --seeds $TEACHER_SEEDS --ensemble --report "$REPORT"
fi
# shellcheck disable=SC2086
$BIN/python benchmarks/cv_study.py --arms $CV_ARMS --seeds $CV_SEEDS --report "$REPORT"
JOINT=()
if awk "BEGIN { exit !($SHARE > 0) }"; then
  JOINT=(--pretrained-share "$SHARE")
  if [ -n "$PRETRAINED" ]; then
    $BIN/python -c "$STUDY; cv_study.pretrain('runs/pretrain/$PRETRAINED', 1, 2)"  # skipped once done
    JOINT+=(--pretrained "runs/pretrain/$PRETRAINED")
  fi
  # shellcheck disable=SC2086
  $BIN/python benchmarks/cv_study.py --arms "$ARM" --seeds $CV_SEEDS "${JOINT[@]}"
fi
$BIN/python benchmarks/openset_cv.py --arm "$ARM" "${JOINT[@]}" --per-class
# the prototype weight of the built-in classes: chosen on the first two CV seeds, the others beside them
read -r -a SEEDS <<< "$CV_SEEDS"
FUSION_GROUPS=("$ARM:${SEEDS[0]},${SEEDS[1]}")
if [ "${#SEEDS[@]}" -gt 2 ]; then FUSION_GROUPS+=("$ARM:$(IFS=,; echo "${SEEDS[*]:2}")"); fi
$BIN/python benchmarks/fusion_cv.py "${FUSION_GROUPS[@]}" "${JOINT[@]}"
WEIGHT=$($BIN/python -c "import json; print(json.load(open('reports/fusion_cv.json'))['prototype_weight'])")
# the temperature and the event parameters on the form that ships: one final run: every CV run; several:
# per fold, the CV runs of FINAL_SEEDS averaged (or kept side by side) as the final runs are
SHIPPED_ARM=$ARM
GROUP=$ARM
read -r -a FINAL <<< "$FINAL_SEEDS"
if [ "${#FINAL[@]}" -gt 1 ]; then
  # shellcheck disable=SC2086
  $BIN/python benchmarks/soup_cv.py --arm "$ARM" --seeds $FINAL_SEEDS --report "$REPORT" "${ENSEMBLE[@]}"
  SHIPPED_ARM=$($BIN/python -c "import sys; sys.path.insert(0, 'benchmarks'); import soup_cv; print(soup_cv.soup_arm(['$ARM'], '$FINAL_SEEDS'.split(), ensemble='$FORM' == 'ensemble'))")
  GROUP="$SHIPPED_ARM:$(IFS=+; echo "${FINAL[*]}")"
fi
# how a clip's windows vote: amplitude, by the rule of BENCHMARKS.md "How a clip's windows vote" (VOTE=mean: equal)
VOTE=${VOTE:-amplitude}
if [ "$VOTE" != mean ]; then  # the window caches calibration_cv.py reads the vote from
  $BIN/python benchmarks/vote_cv.py "$GROUP" "${JOINT[@]}" --prototype-weight "$WEIGHT" --report vote_cv_shipped
fi
$BIN/python benchmarks/calibration_cv.py "$GROUP" "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE"
TEMPERATURE=$($BIN/python -c "import json; print(json.load(open('reports/calibration_cv.json'))['temperature'])")
EVENT_SEEDS=()  # several final runs: the CV runs combined of those seeds only (the arm may hold other combinations)
if [ "${#FINAL[@]}" -gt 1 ]; then EVENT_SEEDS=(--seeds "$(IFS=+; echo "${FINAL[*]}")"); fi
$BIN/python benchmarks/events_cv.py --arm "$SHIPPED_ARM" "${EVENT_SEEDS[@]}" "${JOINT[@]}" --prototype-weight "$WEIGHT" --temperature "$TEMPERATURE"
$BIN/python benchmarks/enrol_cost.py --arm "$ARM" --seed 0 "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE"
# the margin of a class enrolled from one clip (BENCHMARKS.md "A margin for one example"): five leave-out runs, then its cost
$BIN/python benchmarks/enrol_bench.py --arm "$ARM" "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE"
$BIN/python benchmarks/enrol_cost.py --arm "$ARM" --seed 0 "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE" \
  --shots 1 --margins -0.05 -0.03 -0.02 -0.01 0 --report enrol_cost_1shot
# where enrolled classes are answered (BENCHMARKS.md "The clip gate, built"): both gates at each margin
$BIN/python benchmarks/enrol_cost.py --arm "$ARM" --seed 0 "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE" \
  --clip-gate --report enrol_cost_clipgate5
$BIN/python benchmarks/enrol_cost.py --arm "$ARM" --seed 0 "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE" \
  --shots 1 --margins -0.05 -0.03 -0.02 -0.01 0 --clip-gate --report enrol_cost_clipgate1
$BIN/python benchmarks/int8_cv.py --arm "$ARM" "${JOINT[@]}" --prototype-weight "$WEIGHT" --vote "$VOTE"
ESC10=$($BIN/python -c "$STUDY; print(cv_study.ESC10)")  # ../shared/data/esc10 or where SOUNDARC_DATA says
final_run() {  # ARM SEED [SETTING...]: the final run of ARM on folds 1-4 (benchmarks/final_runs.sh)
  ARM=$1 FINAL_SEEDS=$2 BIN=$BIN benchmarks/final_runs.sh "${@:3}"
}
TAUGHT=()
if [ "$TEACHER_ARM" != None ]; then
  TEACHERS=()
  for seed in $TEACHER_SEEDS; do
    final_run "$TEACHER_ARM" "$seed"
    TEACHERS+=("runs/default-$TEACHER_ARM-seed$seed")
  done
  $BIN/python benchmarks/soup_cv.py --runs "${TEACHERS[@]}" --out "runs/default-$TEACHER_ARM-ens" --ensemble
  TAUGHT=("teacher=runs/default-$TEACHER_ARM-ens")
fi
FINAL=()  # one final run per seed on folds 1-4, then (several) their weights averaged or an ensemble of them
for seed in $FINAL_SEEDS; do
  final_run "$ARM" "$seed" "${TAUGHT[@]}"
  FINAL+=("runs/default-$ARM-seed$seed")
done
SHIPPED="${FINAL[0]}"
if [ "${#FINAL[@]}" -gt 1 ]; then
  $BIN/python benchmarks/soup_cv.py --runs "${FINAL[@]}" --out "runs/default-$ARM" "${ENSEMBLE[@]}"
  SHIPPED="runs/default-$ARM"
fi
SERVED=()
if [ "$VOTE" != mean ]; then SERVED=(--served-report vote_cv_shipped); fi
$BIN/python benchmarks/finalise_default.py "$SHIPPED" "$ARM" models/default "${JOINT[@]}" --report "$REPORT" "${SERVED[@]}"
$BIN/soundarc quantize models/default --audio "$ESC10"
