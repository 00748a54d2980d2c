#!/usr/bin/env bash
# The fused attention kernel on a GPU machine that has nvcc, CMake and PyTorch 2.11 but no
# registry access and none of the project's Debian libraries: builds the kernel and its check
# program against that PyTorch's LibTorch (DISTILLERY_KERNELS_ONLY), for the GPU's own
# architecture, then runs the correctness checks and the benchmark and writes them as JSON.
#   tools/gpu_attention.sh [OUT.json]        (default: gpu-attention.json in the repository root)
# Environment: PYTHON (default python3), JOBS (default: all cores).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/gpu-attention.json}
python=$(command -v "${PYTHON:-python3}")
build=$root/build-kernels
arch=$("$python" -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}.{minor}')")
start=$(date +%s)
cmake -S "$root" -B "$build" -DDISTILLERY_KERNELS_ONLY=ON -DDISTILLERY_PYTHON="$python" -DDISTILLERY_CUDA_ARCH="$arch" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"${JOBS:-$(nproc)}" --target attention_check
echo "gpu_attention: built in $(( $(date +%s) - start )) s"
"$build/kernels/attention_check" "$out"
echo "gpu_attention: $(( $(date +%s) - start )) s in all; results in $out"
