#!/usr/bin/env bash
# The fused attention kernel on a GPU machine that has nvcc, CMake and PyTorch 2.11 but no
# registry access and none of the project's Debian libraries: builds the kernel and its check
# program against that PyTorch's LibTorch (DISTILLERY_KERNELS_ONLY), for the GPU's own
# architecture, runs the correctness checks and (when they pass) the benchmark, writing JSON,
# then spends what is left of the time budget running the fused passes under compute-sanitizer
# (memcheck, racecheck, synccheck, initcheck) when the CUDA toolkit has it.
#   tools/gpu_attention.sh [OUT.json]        (default: gpu-attention.json in the repository root)
# Environment: PYTHON (default python3), JOBS (default: all cores), BUDGET_S (default 480, counted
# from the start of the build: attention_check and each sanitizer tool are cut off at it, and the
# tools that would start past it are skipped).
# The sanitizer's reports go to OUT.json's name with -sanitizer.log; the exit status is
# attention_check's, or 3 when it passed and a sanitizer tool reported errors (a tool that cannot
# run on the machine, as on gVisor ones, changes nothing).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$root/gpu-attention.json}
log=${out%.json}-sanitizer.log
budget=${BUDGET_S:-480}
python=$(command -v "${PYTHON:-python3}")
build=$root/build-kernels
arch=$("$python" -c "import torch; major, minor = torch.cuda.get_device_capability(); print(f'{major}.{minor}')")
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }
cmake -S "$root" -B "$build" -DDISTILLERY_KERNELS_ONLY=ON -DDISTILLERY_PYTHON="$python" -DDISTILLERY_CUDA_ARCH="$arch" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j"${JOBS:-$(nproc)}" --target attention_check
echo "gpu_attention: built in $(elapsed) s"
status=0
# A kernel that hangs (a barrier some threads never reach) must not take the whole call with it:
# the JSON then says how far the run got.
check_limit=$(( budget - $(elapsed) ))
if [ "$check_limit" -lt 60 ]; then check_limit=60; fi  # a slow build still leaves the checks a minute
timeout "$check_limit" "$build/kernels/attention_check" "$out" || status=$?
if [ "$status" -eq 124 ]; then echo "gpu_attention: attention_check was cut off at the time budget (a hang, or a slow kernel): see its JSON's stage"; fi
echo "gpu_attention: checks and benchmark done at $(elapsed) s (exit status $status); results in $out"

sanitizer=""
for candidate in "$(command -v compute-sanitizer || true)" "$(dirname "$(command -v nvcc)")/compute-sanitizer" \
                 "$(dirname "$(dirname "$(command -v nvcc)")")/compute-sanitizer/compute-sanitizer"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then sanitizer=$candidate; break; fi
done
if [ -z "$sanitizer" ]; then
  echo "gpu_attention: no compute-sanitizer beside nvcc: sanitizer checks skipped"
  exit "$status"
fi
: > "$log"
for tool in memcheck racecheck synccheck initcheck; do
  left=$(( budget - $(elapsed) ))
  if [ "$left" -lt 20 ]; then
    echo "gpu_attention: $tool skipped, the time budget is spent" | tee -a "$log"
    continue
  fi
  tool_log=$(mktemp)
  tool_status=0
  timeout "$left" "$sanitizer" --tool "$tool" --error-exitcode 3 "$build/kernels/attention_check" --sanitize > "$tool_log" 2>&1 || tool_status=$?
  { echo "=== $tool (exit status $tool_status)"; cat "$tool_log"; } >> "$log"
  summary=$(grep -E "SUMMARY" "$tool_log" | tail -1 || true)
  case $tool_status in
    0) verdict="found nothing" ;;
    3) verdict="REPORTED ERRORS"; if [ "$status" -eq 0 ]; then status=3; fi ;;
    124) verdict="was cut off at the time budget" ;;
    *) verdict="could not run the program (exit status $tool_status)" ;;
  esac
  echo "gpu_attention: $tool $verdict at $(elapsed) s: ${summary:-no summary (see $log)}"
  # Seen on gVisor machines: the tool refuses the device, so the others would too.
  if grep -q "Device not supported" "$tool_log"; then
    echo "gpu_attention: compute-sanitizer does not support this machine's GPU; the other tools are skipped"
    rm -f "$tool_log"
    break
  fi
  rm -f "$tool_log"
done
echo "gpu_attention: $(elapsed) s in all; sanitizer reports in $log"
exit "$status"
