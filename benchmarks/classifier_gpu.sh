#!/usr/bin/env bash
# Five-fold slide-grouped CV of the classifier-cpu recipe and its multi-task (Percannella) and experts + hardness
# (Kotte) variants on one GPU, then each variant's fold ensemble on AtNorM-MD (never trained on).
#
# Every fold of every variant trains at once, one `mitoscope train classifier --folds K` process each, sharing
# the GPU (the CPU cores prepare the patches); a last call per variant pools the out-of-fold predictions into
# cv_summary.json and writes the ensemble. The recipe is unchanged except float16 AMP (train.amp=true), the
# GPU's counterpart of the recipe's CPU bfloat16.
#
# Usage (repo root):  DATA=../shared/data RUNS=runs/gpu bash benchmarks/classifier_gpu.sh [variant ...]
#   variants: single multitask experts (default: all three); recipe candidates on the single-task model:
#   soft (trained on the share of expert votes), unfreeze (frozen_stages 3: one more stage trained), soft_unfreeze,
#   lite2 (the recipe on 2026-11-23 only: EfficientNet-Lite2, 10 epochs)
#   DATA holds amibr/amibr_train.csv and atnorm-md/ (benchmarks/jpeg_copy.py writes a JPEG copy small enough
#   to carry to a lent GPU machine); TRAIN_TIMEOUT caps the training phase (seconds); DEVICE (default cuda);
#   EXTRA: more options for every training call, e.g. "--set train.epochs=1" for a smoke test; SCORE=0 skips
#   the AtNorM-MD scoring (benchmarks/ensemble_rules.py scores every rule from one pass instead).
set -uo pipefail
DATA=${DATA:-../shared/data}
RUNS=${RUNS:-runs/gpu}
PY=${PY:-python3}
FOLDS=${FOLDS:-5}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-1800}
DEVICE=${DEVICE:-cuda}
SCORE=${SCORE:-1}
read -r -a extra <<<"${EXTRA:-}"
variants=("$@")
[ ${#variants[@]} -eq 0 ] && variants=(single multitask experts)

declare -A SETS=(
  [single]=""
  [multitask]="--set model.name=atypical_multitask"
  [experts]="--set model.name=atypical_experts --set model.kwargs.hidden=512"
  [soft]="--set model.kwargs.soft_labels=true"
  [unfreeze]="--set model.kwargs.frozen_stages=3"
  [soft_unfreeze]="--set model.kwargs.soft_labels=true --set model.kwargs.frozen_stages=3"
  [lite2]="--set model.kwargs.backbone=tf_efficientnet_lite2 --set train.epochs=10"
)
common=(--config classifier-cpu --data "$DATA/amibr/amibr_train.csv" --device "$DEVICE" --no-progress
  --set cv.scheme=group_kfold --set "cv.n_splits=$FOLDS" --set train.amp=true "${extra[@]}")

mkdir -p "$RUNS"
start=$(date +%s)
for v in "${variants[@]}"; do
  for k in $(seq 0 $((FOLDS - 1))); do
    # shellcheck disable=SC2086  # SETS values are word lists
    OMP_NUM_THREADS=1 timeout "$TRAIN_TIMEOUT" $PY -m mitoscope train classifier "${common[@]}" ${SETS[$v]} \
      --out "$RUNS/$v" --folds "$k" >"$RUNS/$v.fold$k.log" 2>&1 &
  done
done
wait
echo "training phase: $(($(date +%s) - start)) s wall for ${#variants[@]} variants x $FOLDS folds"

score() {  # score VARIANT NAME MODEL [classify options]: classify AtNorM-MD and evaluate
  local v=$1 name=$2 model=$3
  shift 3
  $PY -m mitoscope classify "$DATA/atnorm-md" --model "$model" --device "$DEVICE" --out "$RUNS/$v/atnorm_$name.csv" "$@" \
    >"$RUNS/$v/atnorm_$name.log" 2>&1 &&
    $PY -m mitoscope evaluate classification "$RUNS/$v/atnorm_$name.csv" --truth "$DATA/atnorm-md" \
      --json "$RUNS/$v/atnorm_$name.json" >>"$RUNS/$v/atnorm_$name.log" 2>&1
}
for v in "${variants[@]}"; do
  (
    # shellcheck disable=SC2086
    $PY -m mitoscope train classifier "${common[@]}" ${SETS[$v]} --out "$RUNS/$v" >"$RUNS/$v.summary.log" 2>&1
    [ "$SCORE" = 1 ] || exit 0
    score "$v" ensemble_mean "$RUNS/$v" --set rule=mean
    score "$v" ensemble_mean_tta "$RUNS/$v" --set rule=mean --tta
    score "$v" ensemble_majority "$RUNS/$v" --set rule=majority
    score "$v" fold0 "$RUNS/$v/fold_0/model.pt"
    score "$v" fold0_tta "$RUNS/$v/fold_0/model.pt" --tta
  ) &
done
wait
echo "all done: $(($(date +%s) - start)) s wall"
