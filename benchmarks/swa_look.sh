#!/usr/bin/env bash
# Weight averaging at a constant rate (BENCHMARKS.md): each run of the -swa arm continues its -floor pair (the
# recipe the code trains, seeds 1-3 on this machine's pre-training draw) from that run's resume state at epoch 40
# (weights, optimiser, schedule, random streams): the -swa arm's first 40 epochs are those, so only the 10 epochs
# at a constant rate and their average differ. Then the 12 pairs as served.
# Resumable: finished runs are skipped, a cut run resumes from its last epoch.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENTOML_DO_NOT_TRACK=True
PY=${PY:-.venv/bin/python}
BASE=ssl-acl-rc-acl-robust-oe-eq-floor
SWA=ssl-acl-rc-acl-robust-oe-eq-swa
for seed in 1 2 3; do
  for fold in 1 2 3 4; do
    from=runs/cv/$BASE/fold$fold-seed$seed to=runs/cv/$SWA/fold$fold-seed$seed
    test "$(cat "$from/cv.json" >/dev/null && $PY -c "import torch; print(torch.load('$from/resume.pt')['epoch'])")" = 40
    if [ ! -e "$to/resume.pt" ]; then
      mkdir -p "$to" && cp "$from/resume.pt" "$from/metrics.jsonl" "$to/"
    fi
  done
  $PY benchmarks/cv_study.py --arms "$SWA" --seeds "$seed" --report cv_study_swa_epyc2
done
$PY benchmarks/vote_cv.py "$SWA:1,2,3" "$BASE:1,2,3" --pretrained-share 0.6 --prototype-weight 0.5 \
    --versus --report vote_cv_swa123
