#!/usr/bin/env bash
# The three architectures on their papers' backbones trained FROM SCRATCH on the CPU (no ImageNet weights exist
# offline for ResNet-50): multi-task (Percannella) on pre-activated ResNet-50 (timm resnetv2_50) with the
# three-layer FC head, experts + hardness (Kotte) on ResNet-50 with the shared 512-d FC, and the single-task
# baseline on pre-activated ResNet-50 — under the architecture ablation's protocol (benchmarks/README.md): the
# benchmark's slide split, native 128 px, one hold-out split of the training slides for the epoch and the
# threshold, scored on the held-out slides and on AtNorM-MD. Nothing frozen, AdamW 1e-3 cosine, bf16.
#
# Usage (repo root):  OMP_NUM_THREADS=2 bash benchmarks/classifier_scratch.sh [variant ...]
#   variants: multitask experts single (default: all three, in that order); EPOCHS (default 20);
#   RUNS (default runs); PY (default .venv/bin/python). Each writes
#   benchmarks/results/classifier_amibr_scratch_<variant>.json; a rerun resumes its run directory.
set -euo pipefail
EPOCHS=${EPOCHS:-20}
RUNS=${RUNS:-runs}
PY=${PY:-.venv/bin/python}
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(multitask experts single)

declare -A SETS=(
  [multitask]="--set model.name=atypical_multitask --set model.kwargs.backbone=resnetv2_50 --set model.kwargs.hidden=[512,256]"
  [experts]="--set model.name=atypical_experts --set model.kwargs.backbone=resnet50 --set model.kwargs.hidden=512"
  [single]="--set model.kwargs.backbone=resnetv2_50"
)
common=(--set cv.scheme=holdout --set data.size=128 --set "train.epochs=$EPOCHS" --set train.patience=null
  --set model.kwargs.pretrained=false --set model.kwargs.frozen_stages=0)

for v in "${variants[@]}"; do
  [ -n "${SETS[$v]+x}" ] || { echo "unknown variant $v (multitask, experts, single)" >&2; exit 2; }
  echo "== $v: $(date -u +%FT%TZ)"
  # shellcheck disable=SC2086  # SETS values are word lists
  /usr/bin/time -f "$v: %e s wall, %M KiB max RSS" "$PY" benchmarks/classifier_amibr.py "${common[@]}" ${SETS[$v]} \
    --run-dir "$RUNS/bench_scratch_$v" --json "benchmarks/results/classifier_amibr_scratch_$v.json"
done
