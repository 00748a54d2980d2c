#!/usr/bin/env bash
# FD in the features of a second, independently trained Fashion-MNIST classifier next to
# FD_fmnist, from the same samples: a check on students whose training read the shipped
# classifier (ADD's discriminator, feature-distance regressions), which FD_fmnist is measured
# with. The second classifier is assets/eval/fmnist-second-classifier.safetensors:
# configs/eval/fmnist_classifier.yaml at another seed and width (92.93% test accuracy against the
# first's 92.39%; 12 minutes on one thread), trained by
#   distillery classifier train --config configs/eval/fmnist_classifier.yaml --out OUT \
#       --set train.seed=1 --set model.channels=48
# CTM's shipped GAN recipe reads it too, so for that student the check is not independent.
# Each NAME=SOURCE is a student file or run directory at 1 step, or teacher:SAMPLER:STEPS for
# the shipped teacher; NUM samples each (seed 2000, labels cycling, as tools/fd_vs_nfe.sh).
# Writes OUT/points.jsonl (kept across runs, so an interrupted check resumes) and OUT/table.md.
# Usage: tools/fd_cross_check.sh OUT NUM NAME=SOURCE ... (the source is what follows the last =)
#   tools/fd_cross_check.sh runs/fd-cross-check 10000 'teacher=teacher:heun:18' ADD=assets/students/fmnist-add.safetensors
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 3 ] || { sed -n '2,15p' "$0"; exit 2; }
source tools/sweep_setup.sh "$@"
shift 2
second=assets/eval/fmnist-second-classifier.safetensors
[ -f "$out/fmnist-test-second.npz" ] || "$cli" eval stats dataset:fmnist-test --classifier "$second" --out "$out/fmnist-test-second.npz" --quiet > /dev/null

for entry in "$@"; do
  name=${entry%=*} source=${entry##*=}
  grep -q "\"name\": \"$name\"," "$points" && continue
  samples="$out/samples.safetensors"
  case $source in
    teacher:*)
      IFS=: read -r _ sampler steps <<< "$source"
      "$cli" sample --teacher assets/teachers/fmnist.safetensors --sampler "$sampler" --steps "$steps" --num "$num" --seed 2000 --labels all \
        --out "$samples" > "$out/generate.log" 2>&1 ;;
    *) "$cli" generate --model "$source" --steps 1 --num "$num" --seed 2000 --labels all --out "$samples" > "$out/generate.log" 2>&1 ;;
  esac
  shipped=$("$cli" eval fd assets/eval/fmnist-test.npz "$samples" --quiet)
  independent=$("$cli" eval fd "$out/fmnist-test-second.npz" "$samples" --classifier "$second" --quiet)
  "$python" - "$name" "$shipped" "$independent" >> "$points" <<'PY'
import json, sys
name, shipped, independent = sys.argv[1], *map(json.loads, sys.argv[2:])
print(json.dumps({"name": name, "fd_fmnist": shipped["value"], "fd_second_classifier": independent["value"]}))
PY
  rm -f "$samples"
done

"$python" - "$out" "$num" <<'PY'
import json, sys
out, num = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(f"{out}/points.jsonl")]
teacher = next((r for r in rows if r["name"].startswith("teacher")), None)
with open(f"{out}/table.md", "w") as table:
    table.write(f"| model ({num:,} samples) | FD_fmnist | ratio to the teacher | FD, second classifier | ratio to the teacher |\n|---|---|---|---|---|\n")
    for r in rows:
        ratio = lambda key: f"{r[key] / teacher[key]:.2f}×" if teacher else "–"
        table.write(f"| {r['name']} | {r['fd_fmnist']:.2f} | {ratio('fd_fmnist')} | {r['fd_second_classifier']:.2f} | {ratio('fd_second_classifier')} |\n")
PY
cat "$out/table.md"
