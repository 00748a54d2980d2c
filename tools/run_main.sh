#!/usr/bin/env bash
# README's main command: installs what is missing, builds the CLI, then runs the product end to
# end on the shipped Fashion-MNIST teacher: record its trajectories (Heun, 35 NFE), distil a
# one-step DMD2 student (regression on the recorded pairs), and write a report comparing the
# two (FD_fmnist, class accuracy, precision/recall, images/s, grids, FD-vs-step plot).
# Every stage resumes: rerunning after a kill continues where it stopped.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh"
source "$root/tools/build_env.sh"
build=${DISTILLERY_BUILD_DIR:-$root/build}
out=${1:-$root/out/main}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2 --target distillery
cd "$root"
teacher=assets/teachers/fmnist.safetensors
start=$(date +%s)
mkdir -p "$out"
"$build/distillery" record --teacher "$teacher" --sampler heun --steps 18 --num 500 --labels all --seed 0 \
  --store endpoints --out "$out/store" --resume
"$build/distillery" distill --config configs/distill/dmd2_fmnist.yaml --teacher "$teacher" --out "$out/student" \
  --set "dmd2.regression_store=$out/store" --resume
"$build/distillery" report --teacher "$teacher" --student "$out/student" --store "$out/store" --out "$out/report" --num 500
echo "main job: $(( $(date +%s) - start )) s after the build; report in $out/report/report.md"
