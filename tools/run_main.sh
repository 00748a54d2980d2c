#!/usr/bin/env bash
# README's main command: installs what is missing, builds the CLI and runs the longest
# pipeline that exists end to end. Today: sample the analytic 2-D Gaussian-mixture teacher
# with the EDM Heun solver and write the samples (safetensors) and a scatter plot (PNG).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh"
source "$root/tools/build_env.sh"
build=${DISTILLERY_BUILD_DIR:-$root/build}
out=${1:-$root/out}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2 --target distillery
mkdir -p "$out"
for format in safetensors png; do
  "$build/distillery" sample --teacher "gmm:$root/configs/toy/gmm2d.yaml" --sampler heun --steps 18 \
    --num 1000 --seed 0 --out "$out/gmm2d.$format"
done
echo "main job: wrote $out/gmm2d.safetensors and $out/gmm2d.png"
