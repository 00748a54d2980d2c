#!/usr/bin/env bash
# C++ vs Python: one DMD2 iteration (3 critic updates + 1 generator update, batch 32) on the
# shipped Fashion-MNIST teacher, `distillery distill` against the eager PyTorch twins
# (tools/reference/bench_dmd2.py), same thread count. The two alternate for ROUNDS rounds so
# machine load affects both alike; prints the medians and their ratio (below 1: C++ faster).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DISTILLERY_BUILD_DIR:-$root/build}
rounds=${1:-3}
teacher=$root/assets/teachers/fmnist.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cpp=() py=()
for ((i = 0; i < rounds; ++i)); do
  rm -rf "$work/run"
  "$build/distillery" distill --config "$root/configs/distill/dmd2_fmnist.yaml" --teacher "$teacher" --out "$work/run" \
    --set train.steps=10 --set log.every=1 --set eval.every=0 --set grid.every=0 --set checkpoint.every=1000 \
    --set dmd2.regression_weight=0 --set dmd2.guidance=1 --set dmd2.critic_steps=3 --set train.batch=32 >/dev/null 2>&1
  # Steps 3..10: the first two include start-up and allocator warm-up, as the Python warm-up.
  cpp+=("$("$root/.venv/bin/python" -c '
import json, statistics, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
print(1000 * statistics.median(l["sec_per_step"] for l in lines if l.get("step", 0) > 2))' "$work/run/stats.jsonl")")
  py+=("$("$root/.venv/bin/python" "$root/tools/reference/bench_dmd2.py" "$teacher" 32 3 8 |
         "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')")
done
"$root/.venv/bin/python" "$root/tools/reference/ratio_summary.py" "DMD2 iteration (3 critic + 1 generator updates, batch 32)" "${cpp[*]}" "${py[*]}"
