#!/usr/bin/env bash
# The one check of a GPU machine that has python3 with the torch 2.11 wheel (and, for the
# attention kernel's checks, nvcc and CMake) but none of the project's Debian libraries: it
# unpacks the CLI bundle made by tools/bundle_cli.sh, and
#   1. checks that the bundle's libraries resolve there (ldd),
#   2. follows the device: sample (the teacher, Heun 18 steps), generate (the shipped DMD2
#      student) and a few DMD2 steps, each on the CPU and on DEVICE; the noise must be equal bit
#      for bit, the samples and the trained weights equal within tolerance; sample and generate
#      again on DEVICE with --precision bf16, close to its float32 results, and with
#      --cuda-graph, equal to its eager results, each timed in images/s at batch 256,
#   3. runs the main job on DEVICE (record, distill, report: README's) and keeps its report,
#   4. runs tools/gpu_attention.sh (the fused attention kernel's correctness, benchmark and
#      compute-sanitizer) with what is left of the time budget,
# writing OUT/gpu_check.json (every stage's exit status and seconds, the comparisons, the
# report's figures) and each stage's log. From the repository root:
#   tools/gpu_check.sh OUT [BUNDLE.tar.gz]      (default bundle: build/bundle/distillery.tar.gz)
# Environment: DEVICE (default cuda; DEVICE=cpu rehearses the whole script without a GPU),
# PYTHON (python3), MAIN_NUM (trajectories, 500), MAIN_STEPS (DMD2 steps, 450: README's job), BUDGET_S (total
# seconds, 540: the attention stage gets what the others left).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: tools/gpu_check.sh OUT [BUNDLE.tar.gz]}
tarball=${2:-$root/build/bundle/distillery.tar.gz}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
main_num=${MAIN_NUM:-500}
main_steps=${MAIN_STEPS:-450}
budget=${BUDGET_S:-540}
start=$(date +%s)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stages="$out/stages.jsonl"
: > "$stages"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$root"

# stage NAME COMMAND...: runs it with its output in OUT/NAME.log, records exit status and time.
stage() {
  local name=$1 begin status
  shift
  begin=$(date +%s.%N)
  "$@" > "$out/$name.log" 2>&1
  status=$?
  printf '{"stage": "%s", "exit": %d, "seconds": %s}\n' "$name" "$status" "$(awk -v a="$begin" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')" >> "$stages"
  echo "gpu_check: $name: exit $status"
  return $status
}

tar -xzf "$tarball" -C "$work" || { echo "gpu_check: cannot unpack $tarball (make it with tools/bundle_cli.sh)" >&2; exit 1; }
cli="$work/distillery/distillery"
torch_dir=$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')
export DISTILLERY_TORCH_DIR=$torch_dir
# Through the launcher's own search path: a missing library or symbol version ("version
# `GLIBC_2.36' not found") shows here rather than as the first command's crash.
libraries() {
  getconf GNU_LIBC_VERSION
  DISTILLERY_BUNDLE_LDD=1 "$cli" 2>&1
  ! DISTILLERY_BUNDLE_LDD=1 "$cli" 2>&1 | grep -q "not found"
}
stage libraries libraries
stage machine "$python" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"

teacher=assets/teachers/fmnist.safetensors
# The CPU's results are the reference ("cpu"); DEVICE's are compared with them ("device").
for tag in cpu device; do
  where=cpu
  [ "$tag" = device ] && where=$device
  stage "sample-$tag" "$cli" sample --teacher "$teacher" --sampler heun --steps 18 --num 256 --seed 3 --device "$where" --out "$work/sample-$tag.safetensors"
  stage "generate-$tag" "$cli" generate --model assets/students/fmnist-dmd2.safetensors --num 256 --seed 3 --device "$where" \
    --out "$work/generate-$tag.safetensors"
  stage "distill-$tag" "$cli" distill --config configs/distill/dmd2_fmnist.yaml --teacher "$teacher" --out "$work/distill-$tag" --device "$where" \
    --set train.steps=4 --set train.batch=16 --set dmd2.regression_weight=0 --set eval.every=0 --set grid.every=0 --set checkpoint.every=4
done
# Sampling with --precision bf16 on DEVICE, compared with DEVICE's float32.
stage sample-bf16 "$cli" sample --teacher "$teacher" --sampler heun --steps 18 --num 256 --seed 3 --device "$device" --precision bf16 \
  --out "$work/sample-bf16.safetensors"
stage generate-bf16 "$cli" generate --model assets/students/fmnist-dmd2.safetensors --num 256 --seed 3 --device "$device" --precision bf16 \
  --out "$work/generate-bf16.safetensors"
# Eager and CUDA-graph sampling on DEVICE at batch 256, timed by the progress line's rate over
# the whole run (the graphs' capture included): the one-step student and the teacher's 18 Heun
# steps (35 NFE). device-follow compares them.
if [ "$device" != cpu ]; then
  for mode in eager graph; do
    flag=""
    [ "$mode" = graph ] && flag="--cuda-graph"
    stage "generate-$mode-rate" "$cli" generate --model assets/students/fmnist-dmd2.safetensors --num 25600 --batch 256 --seed 3 --device "$device" \
      $flag --out "$work/generate-$mode-rate.safetensors"
    stage "sample-$mode-rate" "$cli" sample --teacher "$teacher" --sampler heun --steps 18 --num 2560 --batch 256 --seed 3 --device "$device" \
      $flag --out "$work/sample-$mode-rate.safetensors"
  done
fi
# The comparisons, read with a safetensors reader of a few lines (the machine may lack the package).
stage device-follow "$python" - "$work" device "$out/device_follow.json" "$out" <<'PY'
import json, os, re, struct, sys
import torch
work, tag, path, logs = sys.argv[1:5]
DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "U8": torch.uint8, "I32": torch.int32}
def load(file):
    data = open(file, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    body = data[8 + n:]
    return {k: torch.frombuffer(bytearray(body[v["data_offsets"][0]:v["data_offsets"][1]]), dtype=DTYPES[v["dtype"]]).reshape(v["shape"]) for k, v in header.items()}
def relative(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
report = {}
for kind in ("sample", "generate"):
    cpu, other = load(f"{work}/{kind}-cpu.safetensors"), load(f"{work}/{kind}-{tag}.safetensors")
    report[kind] = {"noise_bitwise_equal": torch.equal(cpu["noise"], other["noise"]),
                    "samples_max_abs_difference": (cpu["samples"] - other["samples"]).abs().max().item()}
    bf16 = load(f"{work}/{kind}-bf16.safetensors")
    report[kind + "-bf16"] = {"noise_bitwise_equal": torch.equal(other["noise"], bf16["noise"]),
                              "samples_mean_abs_difference": (other["samples"] - bf16["samples"]).abs().mean().item()}
# CUDA graphs against eager evaluation on DEVICE, and the images/s of each from the progress
# line; the twins' figures on the H200 (../shared/gpu-results/2026-11-29): graphed, eager.
def rate(stage):
    found = re.findall(r"([0-9.]+) img/s in", open(f"{logs}/{stage}.log", errors="replace").read())
    return float(found[-1]) if found else None
twins = {"generate": (49600, 15100), "sample": (1417, 436)}
graphed = [kind for kind in twins if os.path.exists(f"{work}/{kind}-graph-rate.safetensors")]
for kind in graphed:
    eager, graph = load(f"{work}/{kind}-eager-rate.safetensors"), load(f"{work}/{kind}-graph-rate.safetensors")
    r_eager, r_graph = rate(f"{kind}-eager-rate"), rate(f"{kind}-graph-rate")
    report[kind + "-cuda-graph"] = {"noise_bitwise_equal": torch.equal(eager["noise"], graph["noise"]),
                                    "samples_max_abs_difference": (eager["samples"] - graph["samples"]).abs().max().item(),
                                    "images_per_s_eager": r_eager, "images_per_s_graph": r_graph,
                                    "graph_over_eager": r_graph / r_eager if r_eager and r_graph else None,
                                    "graph_over_twins_graphed": r_graph / twins[kind][0] if r_graph else None,
                                    "eager_over_twins_eager": r_eager / twins[kind][1] if r_eager else None}
cpu, other = load(f"{work}/distill-cpu/student.safetensors"), load(f"{work}/distill-{tag}/student.safetensors")
report["distill"] = {"student_relative_difference": max(relative(other[k], cpu[k]) for k in cpu)}
# Tolerances: 35 solver evaluations in float32 by other kernels (cuDNN, cuBLAS); four Adam steps.
# bf16 against float32: a sanity bound (the CPU's figures, 7 NFE: 0.0035 generate, 0.0139 sample).
report["pass"] = all(report[k]["noise_bitwise_equal"] for k in ("sample", "generate", "sample-bf16", "generate-bf16")) and \
    all(report[k]["samples_mean_abs_difference"] < 5e-2 for k in ("sample-bf16", "generate-bf16")) and \
    report["sample"]["samples_max_abs_difference"] < 1e-2 and report["generate"]["samples_max_abs_difference"] < 1e-2 and \
    report["distill"]["student_relative_difference"] < 1e-3 and \
    all(report[k + "-cuda-graph"]["noise_bitwise_equal"] and report[k + "-cuda-graph"]["samples_max_abs_difference"] < 1e-4 for k in graphed)
json.dump(report, open(path, "w"), indent=1)
print(json.dumps(report))
sys.exit(0 if report["pass"] else 1)
PY

main="$work/main"
stage main-record "$cli" record --teacher "$teacher" --sampler heun --steps 18 --num "$main_num" --labels all --seed 0 --store endpoints \
  --out "$main/store" --device "$device"
stage main-distill "$cli" distill --config configs/distill/dmd2_fmnist.yaml --teacher "$teacher" --out "$main/student" --device "$device" \
  --set "dmd2.regression_store=$main/store" --set "train.steps=$main_steps"
stage main-report "$cli" report --teacher "$teacher" --student "$main/student" --store "$main/store" --out "$out/report" --num "$main_num" \
  --device "$device"
cp "$main/student/stats.jsonl" "$out/main_stats.jsonl" 2> /dev/null

left=$(( budget - ($(date +%s) - start) ))
if [ "$device" != cpu ] && [ "$left" -gt 120 ]; then
  BUDGET_S=$(( left - 20 )) stage attention "$root/tools/gpu_attention.sh" "$out/attention.json"
else
  echo "gpu_check: attention skipped (device $device, $left s left)"
fi

"$python" - "$out" "$(( $(date +%s) - start ))" <<'PY'
import json, os, sys
out, seconds = sys.argv[1], int(sys.argv[2])
result = {"seconds": seconds, "stages": [json.loads(line) for line in open(f"{out}/stages.jsonl")]}
for name in ("device_follow", "attention"):
    if os.path.exists(f"{out}/{name}.json"):
        result[name] = json.load(open(f"{out}/{name}.json"))
if os.path.exists(f"{out}/report/report.json"):
    result["report"] = json.load(open(f"{out}/report/report.json"))
main = [s for s in result["stages"] if s["stage"].startswith("main-")]
result["main_job_seconds"] = round(sum(s["seconds"] for s in main), 1)
result["all_stages_pass"] = all(s["exit"] == 0 for s in result["stages"])
json.dump(result, open(f"{out}/gpu_check.json", "w"), indent=1)
print(f"gpu_check: {out}/gpu_check.json: {seconds} s, main job {result['main_job_seconds']} s, all stages pass: {result['all_stages_pass']}")
sys.exit(0 if result["all_stages_pass"] else 1)
PY
