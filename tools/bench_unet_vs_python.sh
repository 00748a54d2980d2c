#!/usr/bin/env bash
# C++ vs Python: one EDM training step (forward + backward + Adam) of the shipped teacher's
# UNet at batch 64, LibTorch against the eager PyTorch twin, same recipe and thread count.
# The two alternate for ROUNDS rounds so machine load affects both alike; prints the medians
# and their ratio (C++ / Python: below 1 means C++ is faster).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DISTILLERY_BUILD_DIR:-$root/build}
rounds=${1:-5}
cpp=() py=()
for ((i = 0; i < rounds; ++i)); do
  cpp+=("$("$build/bench/distillery_bench" --benchmark_filter=BM_UNetTrainStep --benchmark_min_time=3 --benchmark_format=json 2>/dev/null |
          "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["benchmarks"][0]["real_time"])')")
  py+=("$("$root/.venv/bin/python" "$root/tools/reference/bench_unet.py" "$root/configs/teacher/fmnist.yaml" 64 8 |
         "$root/.venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["median_ms"])')")
done
"$root/.venv/bin/python" "$root/tools/reference/ratio_summary.py" "UNet train step, batch 64" "${cpp[*]}" "${py[*]}"
