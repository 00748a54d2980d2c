#!/usr/bin/env bash
# Memory and reading time of training from a trajectory store as the store grows tenfold: k-reflow
# on the Fashion-MNIST teacher (configs/distill/reflow_fmnist.yaml) for STEPS steps from stores of
# 1,000, 10,000 and 100,000 trajectories (one Euler step each: only the store's size matters
# here), with the peak resident size (/usr/bin/time), the median pair-reading time per step and
# its share of the step (stats.jsonl's pair_read_seconds and sec_per_step). One line per store.
# Usage: tools/store_memory.sh [OUT_DIR] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/store-memory}
steps=${2:-200}
mkdir -p "$out"
teacher=assets/teachers/fmnist.safetensors
python=.venv/bin/python
[ -x "$python" ] || python=python3
printf '%-12s %10s %14s %14s %10s\n' trajectories 'store MB' 'peak RSS MiB' 'read ms/step' share
for num in 1000 10000 100000; do
  store="$out/store-$num"
  resume=()
  [ -d "$store" ] && resume=(--resume)
  build/distillery record --teacher "$teacher" --sampler euler --steps 1 --num "$num" --labels all --seed 1 --store endpoints \
    --out "$store" "${resume[@]}" > "$out/record-$num.log" 2>&1
  rm -rf "$out/run-$num"
  /usr/bin/time -f %M -o "$out/run-$num.kib" build/distillery distill --config configs/distill/reflow_fmnist.yaml --teacher "$teacher" \
    --out "$out/run-$num" --set reflow.store="$store" --set train.steps="$steps" --set eval.every=0 --set grid.every=0 --set grid.num=1 \
    --set log.every=1 --set checkpoint.every=100000 > "$out/run-$num.log" 2>&1
  "$python" - "$num" "$(du -sm "$store" | cut -f1)" "$(tail -1 "$out/run-$num.kib")" "$out/run-$num/stats.jsonl" <<'PY'
import json, statistics, sys
num, megabytes, kib, stats = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
lines = [json.loads(l) for l in open(stats) if "pair_read_seconds" in l]
read = statistics.median(l["pair_read_seconds"] for l in lines)
step = statistics.median(l["sec_per_step"] for l in lines)
print(f"{int(num):<12,} {megabytes:>10} {kib / 1024:>14.0f} {read * 1e3:>14.2f} {read / step:>10.1%}")
PY
done
