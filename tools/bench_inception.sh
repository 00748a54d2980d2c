#!/usr/bin/env bash
# FID feature extraction, ours against pytorch-fid, side by side on this CPU: the same Inception
# weights (seeded random ones with calibrated batch norm: the real ones cannot be downloaded
# here, and speed does not depend on the values), the same PNG folder, batch 50, the same
# thread count; rounds alternate and medians are reported.
#   tools/bench_inception.sh [images] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
images=${1:-500}
rounds=${2:-3}
[[ -x build/distillery ]] || { echo "build first: tools/run_tests.sh" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
threads=$(nproc)

.venv/bin/python - "$work" "$images" <<'PY'
import os, sys
import numpy as np, torch
from PIL import Image
from safetensors.torch import save_file
sys.path.insert(0, "tools")
from convert_inception import build_fid_inception
work, n = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
model = build_fid_inception()
for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        m.reset_running_stats(); m.momentum = None
model.train()
with torch.no_grad():
    model(torch.rand(4, 3, 299, 299))
save_file({k: v.contiguous() for k, v in model.eval().state_dict().items()}, os.path.join(work, "inception.safetensors"))
os.makedirs(os.path.join(work, "images"))
rng = np.random.default_rng(0)
for i in range(n):
    Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)).save(os.path.join(work, "images", f"{i:05d}.png"))
PY

python_round() {
  .venv/bin/python - "$work" "$threads" <<'PY'
import glob, os, sys, time
import torch
from safetensors.torch import load_file
sys.path.insert(0, "tools")
from convert_inception import build_fid_inception
from pytorch_fid.fid_score import calculate_activation_statistics
work, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
model = build_fid_inception()
model.load_state_dict(load_file(os.path.join(work, "inception.safetensors")))
files = sorted(glob.glob(os.path.join(work, "images", "*.png")))
start = time.perf_counter()
calculate_activation_statistics(files, model.eval(), batch_size=50, dims=2048, device="cpu", num_workers=0)
print(time.perf_counter() - start)
PY
}

ours_round() {
  build/distillery eval stats "$work/images" --features inception --inception "$work/inception.safetensors" --out "$work/ours.npz" --batch 50 --quiet |
    .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['sources'][0]['seconds'])"
}

ours=(); theirs=()
for ((r = 0; r < rounds; r++)); do
  theirs+=("$(python_round 2>/dev/null | tail -1)")
  ours+=("$(ours_round)")
done
.venv/bin/python - "$images" "${ours[*]}" "${theirs[*]}" <<'PY'
import statistics, sys
n = int(sys.argv[1]); ours = list(map(float, sys.argv[2].split())); theirs = list(map(float, sys.argv[3].split()))
o, t = statistics.median(ours), statistics.median(theirs)
print(f"{n} 28x28 PNGs, batch 50: distillery {o:.2f} s ({n / o:.1f} img/s), pytorch-fid {t:.2f} s ({n / t:.1f} img/s), "
      f"speed ratio ours/theirs {t / o:.3f} (rounds: ours {ours}, pytorch-fid {theirs})")
PY
