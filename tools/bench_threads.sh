#!/usr/bin/env bash
# Two CPU processes on one machine (two `--part` recorders, a `distill` beside a `record`, or
# torchrun's ranks): DMD2 iterations (batch 32, 3 critic + 1 generator updates, the shipped
# Fashion-MNIST teacher) run alone with every core, then two at once, first each with every
# core (what each process took before --threads, and still takes when told to) and then each
# with its share (what torchrun's LOCAL_WORLD_SIZE now gives it, or --threads by hand). The
# settings alternate for ROUNDS rounds so machine load affects them alike; prints the medians
# of the per-step times (steps 3..STEPS) and the gain.
#   tools/bench_threads.sh [ROUNDS] [STEPS]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${DISTILLERY_BUILD_DIR:-$root/build}
rounds=${1:-2}
steps=${2:-10}
cores=$(nproc)
share=$(( cores / 2 > 0 ? cores / 2 : 1 ))
teacher=$root/assets/teachers/fmnist.safetensors
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # run DIR THREADS
  rm -rf "$1"
  env -u OMP_NUM_THREADS "$build/distillery" --threads "$2" distill --config "$root/configs/distill/dmd2_fmnist.yaml" --teacher "$teacher" --out "$1" \
    --set train.steps="$steps" --set log.every=1 --set eval.every=0 --set grid.every=0 --set checkpoint.every=1000 \
    --set dmd2.regression_weight=0 --set dmd2.guidance=1 --set dmd2.critic_steps=3 --set train.batch=32 >/dev/null 2>&1
}
median_ms() {  # median_ms STATS...
  "$root/.venv/bin/python" -c '
import json, statistics, sys
times = [json.loads(l)["sec_per_step"] for path in sys.argv[1:] for l in open(path) if json.loads(l).get("step", 0) > 2]
print(f"{1000 * statistics.median(times):.0f}")' "$@"
}
alone=() both_all=() both_share=()
for ((i = 0; i < rounds; ++i)); do
  run "$work/alone" "$cores"
  alone+=("$(median_ms "$work/alone/stats.jsonl")")
  run "$work/a" "$cores" & run "$work/b" "$cores"; wait
  both_all+=("$(median_ms "$work/a/stats.jsonl" "$work/b/stats.jsonl")")
  run "$work/a" "$share" & run "$work/b" "$share"; wait
  both_share+=("$(median_ms "$work/a/stats.jsonl" "$work/b/stats.jsonl")")
done
"$root/.venv/bin/python" - "$cores" "$share" "${alone[*]}" "${both_all[*]}" "${both_share[*]}" <<'PY'
import statistics, sys
cores, share = sys.argv[1], sys.argv[2]
alone, both_all, both_share = ([float(x) for x in arg.split()] for arg in sys.argv[3:6])
m = [statistics.median(v) for v in (alone, both_all, both_share)]
print(f"DMD2 step, ms (median of rounds {alone} / {both_all} / {both_share}):")
print(f"  one process, {cores} threads: {m[0]:.0f}")
print(f"  two processes, {cores} threads each: {m[1]:.0f}")
print(f"  two processes, {share} thread(s) each: {m[2]:.0f}")
print(f"  gain of sharing the cores: {m[1] / m[2]:.2f}x per step, each process")
PY
