#!/usr/bin/env bash
# How the training memory estimate compares with what training takes, per method on the
# Fashion-MNIST teacher: the growth of the peak resident size per row between two steps at
# batch 8 and at batch 72 (/usr/bin/time), against the estimate's activations per row (read
# from the refusal of a batch of a million rows). Prints one line per method.
# Usage: [METHODS="ladd add"] tools/training_memory.sh [OUT_DIR]  (diffusion2gan reads runs/fmnist-store, its recipe says how to record it)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/training-memory}
rm -rf "$out"
mkdir -p "$out"
teacher=assets/teachers/fmnist.safetensors
short=(--set train.steps=2 --set eval.every=0 --set grid.every=0 --set grid.num=1 --set checkpoint.every=1000 --device cpu)
printf '%-8s %12s %12s %8s\n' method 'MiB/row' 'estimate' ratio
for method in ${METHODS:-dmd2 cd ect ict scm ctm ladd add diffusion2gan teacher}; do
  if [ "$method" = teacher ]; then
    command=(build/distillery teacher train --config configs/teacher/fmnist.yaml)
  else
    command=(build/distillery distill --config "configs/distill/${method}_fmnist.yaml" --teacher "$teacher")
    # DMD2's regression term needs a trajectory store; the step is measured without it.
    [ "$method" = dmd2 ] && command+=(--set dmd2.regression_weight=0)
  fi
  for batch in 8 72; do
    /usr/bin/time -f %M -o "$out/$method-$batch.kib" "${command[@]}" "${short[@]}" --set train.batch=$batch --out "$out/$method-$batch" \
      > "$out/$method-$batch.log" 2>&1
  done
  "${command[@]}" "${short[@]}" --set train.batch=1000000 --out "$out/$method-refused" > "$out/$method-refused.log" 2>&1 || true
  # "activations: F × 1000000 row(s) × X MiB (allocated per row ...)"
  estimate=$(sed -n 's/.*for activations: \([0-9.]*\) × 1000000 row(s) × \([0-9.]*\) MiB.*/\1 \2/p' "$out/$method-refused.log" | awk '{print $1 * $2}')
  awk -v m="$method" -v a="$(tail -1 "$out/$method-8.kib")" -v b="$(tail -1 "$out/$method-72.kib")" -v e="$estimate" \
    'BEGIN { r = (b - a) / 64 / 1024; printf "%-8s %12.1f %12.1f %8.2f\n", m, r, e, e / r }'
done
