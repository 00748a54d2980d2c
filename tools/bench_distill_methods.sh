#!/usr/bin/env bash
# Training iteration time of each distillation method on the Fashion-MNIST teacher, one run
# after the other on the same machine, as the median `sec_per_step` of steps 3 to N in each
# run's stats.jsonl (step 1 and 2 carry allocation warm-up), and each method's ratio to DMD2's.
# Usage: tools/bench_distill_methods.sh [OUT_DIR] [STEPS] [extra --set k=v ...]
# Run it on an otherwise idle machine: the numbers are only comparable within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/bench-methods}
steps=${2:-20}
shift $(( $# < 2 ? $# : 2 ))
python=.venv/bin/python
[ -x "$python" ] || python=python3
methods=(dmd2 cd ect ict scm ctm ctm_gan pd reflow)
rm -rf "$out"
mkdir -p "$out"
for method in "${methods[@]}"; do
  extra=()
  # DMD2's regression term needs a trajectory store; the iteration is timed without it.
  [ "$method" = dmd2 ] && extra=(--set dmd2.regression_weight=0)
  # Reflow's step is timed as 1-RF (pairs from the data); reading a store's pairs is logged by a
  # reflow run itself (pair_read_seconds).
  [ "$method" = reflow ] && extra=(--set reflow.pairs=independent)
  build/distillery distill --config "configs/distill/${method}_fmnist.yaml" --teacher assets/teachers/fmnist.safetensors \
    --out "$out/$method" --set "train.steps=$steps" --set eval.every=0 --set grid.every=0 --set log.every=1 \
    --set checkpoint.every=100000 "${extra[@]}" "$@" > "$out/$method.log" 2>&1
done
"$python" - "$out" "${methods[@]}" <<'PY'
import json, statistics, sys
out = sys.argv[1]
rows = {}
for method in sys.argv[2:]:
    with open(f"{out}/{method}/stats.jsonl") as f:
        lines = [json.loads(l) for l in f if '"sec_per_step"' in l]
    batch = lines[0]["images"] // lines[0]["step"]
    rows[method] = (statistics.median(l["sec_per_step"] for l in lines if l["step"] >= 3), batch)
print("| method | batch | s per step (median) | relative to DMD2 |\n|---|---|---|---|")
for method, (seconds, batch) in rows.items():
    print(f"| {method} | {batch} | {seconds:.3f} | {seconds / rows['dmd2'][0]:.2f}× |")
PY
