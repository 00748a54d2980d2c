#!/usr/bin/env bash
# Data-parallel scaling on this machine: DMD2 iterations (3 critic + 1 generator updates, the
# shipped Fashion-MNIST teacher) with a global batch of BATCH images, trained by one process
# with every core, then by two processes under torchrun (BATCH/2 images and half the cores
# each, c10d Gloo between them). The two alternate for ROUNDS rounds so machine load affects
# them alike; prints the medians of the per-step times (steps 3..STEPS) and images/s.
#   tools/bench_processes.sh [ROUNDS] [STEPS] [BATCH]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DISTILLERY_BUILD_DIR:-$root/build}
rounds=${1:-2}
steps=${2:-10}
batch=${3:-64}
teacher=$root/assets/teachers/fmnist.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

arguments() {  # arguments DIR BATCH: sets `args`
  args=(distill --config "$root/configs/distill/dmd2_fmnist.yaml" --teacher "$teacher" --out "$1"
    --set train.steps="$steps" --set log.every=1 --set eval.every=0 --set grid.every=0 --set checkpoint.every=1000
    --set dmd2.regression_weight=0 --set dmd2.guidance=1 --set dmd2.critic_steps=3 --set train.batch="$2")
}
median_ms() {  # median_ms STATS
  "$root/.venv/bin/python" -c '
import json, statistics, sys
times = [json.loads(l)["sec_per_step"] for l in open(sys.argv[1]) if json.loads(l).get("step", 0) > 2]
print(f"{1000 * statistics.median(times):.0f}")' "$1"
}
one=() two=()
for ((i = 0; i < rounds; ++i)); do
  rm -rf "$work/one" "$work/two"
  arguments "$work/one" "$batch"
  env -u OMP_NUM_THREADS "$build/distillery" "${args[@]}" >/dev/null 2>&1
  one+=("$(median_ms "$work/one/stats.jsonl")")
  # torchrun sets OMP_NUM_THREADS=1 per process when it is unset; distillery divides the cores
  # by LOCAL_WORLD_SIZE itself, so the variable is set to that share here.
  arguments "$work/two" $((batch / 2))
  OMP_NUM_THREADS=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 )) "$root/.venv/bin/python" -m torch.distributed.run --standalone --nproc_per_node=2 \
    --no-python -- "$build/distillery" "${args[@]}" >/dev/null 2>&1
  two+=("$(median_ms "$work/two/stats.jsonl")")
done
"$root/.venv/bin/python" - "$batch" "$(nproc)" "${one[*]}" "${two[*]}" <<'PY'
import statistics, sys
batch, cores = int(sys.argv[1]), sys.argv[2]
one, two = ([float(x) for x in arg.split()] for arg in sys.argv[3:5])
m1, m2 = statistics.median(one), statistics.median(two)
print(f"DMD2 step at a global batch of {batch}, {cores} cores (ms, rounds {one} / {two}):")
print(f"  one process:   {m1:.0f} ms per step, {1000 * batch / m1:.1f} images/s")
print(f"  two processes: {m2:.0f} ms per step, {1000 * batch / m2:.1f} images/s ({m1 / m2:.2f}x)")
PY
