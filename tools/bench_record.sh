#!/usr/bin/env bash
# Trajectory recording benchmark: trajectories/s, the share of wall time spent writing HDF5
# shards and the manifest, and peak memory as the number of trajectories grows 10×.
#   tools/bench_record.sh            (after tools/run_tests.sh has built build/)
# Teachers: the analytic 2-D mixture, an analytic mixture of 28×28 "images" (so that holding
# every trajectory in memory would show in the peak), and the Fashion-MNIST teacher's
# architecture (the part-trained checkpoint in assets/; speed does not depend on the weights).
set -euo pipefail
cd "$(dirname "$0")/.."
cli=build/distillery
[[ -x $cli ]] || { echo "build first: tools/run_tests.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

.venv/bin/python - "$work/mixture784.yaml" <<'PY'
import sys, numpy as np
rng = np.random.default_rng(0)
means = rng.uniform(-0.6, 0.6, size=(4, 784)).round(3).tolist()
with open(sys.argv[1], "w") as f:
    f.write("shape: [1, 28, 28]\nweights: [1, 1, 1, 1]\nstds: [0.2, 0.2, 0.2, 0.2]\nmeans:\n")
    for m in means:
        f.write("  - [" + ", ".join(map(str, m)) + "]\n")
PY

fmnist=assets/teachers/fmnist.safetensors
printf '| teacher | trajectories | traj/s | wall time waiting for writes | writer busy (overlapped) | peak RSS |\n|---|---|---|---|---|---|\n'
record() {  # name teacher num [extra options]
  local name=$1 teacher=$2 num=$3; shift 3
  local line
  line=$("$cli" record --teacher "$teacher" --num "$num" --out "$work/$name-$num" "$@" 2>&1 | grep "shards written")
  # "... N trajectories in S s (R/s), P% of the time waiting for ... (writing itself: W%, ...), peak RSS M MiB"
  local rate share busy rss
  rate=$(sed -E 's/.*\(([0-9.]+)\/s\).*/\1/' <<<"$line")
  share=$(sed -E 's/.*, ([0-9.]+)% of the time.*/\1/' <<<"$line")
  busy=$(sed -E 's/.*writing itself: ([0-9.]+)%.*/\1/' <<<"$line")
  rss=$(sed -E 's/.*peak RSS ([0-9]+) MiB.*/\1/' <<<"$line")
  printf '| %s | %s | %s | %s%% | %s%% | %s MiB |\n' "$name" "$num" "$rate" "$share" "$busy" "$rss"
}
record "gmm 2-D (Heun 18)" "gmm:configs/toy/gmm2d.yaml" 10000
record "gmm 2-D (Heun 18)" "gmm:configs/toy/gmm2d.yaml" 100000
record "gmm 1×28×28 (Heun 18)" "gmm:$work/mixture784.yaml" 2000
record "gmm 1×28×28 (Heun 18)" "gmm:$work/mixture784.yaml" 20000
record "Fashion-MNIST UNet (Heun 18, labels all)" "$fmnist" 512
