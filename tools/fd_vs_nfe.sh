#!/usr/bin/env bash
# FD_fmnist, precision/recall and class accuracy against NFE: the Fashion-MNIST teacher with Heun
# at 9, 17 and 35 NFE and with DPM-Solver++(2M) at 4 and 8 (Heun below 9 NFE is far worse: 804
# at 5 NFE on 200 samples), and each student given at 1, 2, 4 and 8 steps (the counts its file
# offers: a DMD2 student only its own; one NAME may be given several files, as progressive
# distillation's rounds), NUM samples per point (seed 2000, labels cycling, as the
# README's 10,000-sample rows). Writes OUT/points.jsonl (one line per point, kept across runs so
# an interrupted sweep resumes), OUT/table.md, OUT/fd_vs_nfe.png, one OUT/fd_vs_nfe-FAMILY.png per
# family and OUT/fd_vs_nfe-best.png (each method's best run).
# Usage: tools/fd_vs_nfe.sh OUT NUM [NAME=STUDENT_FILE_OR_RUN_DIR ...] (the file is what follows the last =)
#   tools/fd_vs_nfe.sh runs/fd-vs-nfe 10000 DMD2=assets/students/fmnist-dmd2.safetensors ECT=runs/ect-fmnist
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,10p' "$0"; exit 2; }
source tools/sweep_setup.sh "$@"
shift 2

# measure NAME NFE SAMPLES: one line of points.jsonl, unless that point is there already.
measure() {
  local name=$1 nfe=$2 samples=$3
  grep -q "\"name\": \"$name\", \"nfe\": $nfe," "$points" && return 0
  local fd pr accuracy
  fd=$("$cli" eval fd assets/eval/fmnist-test.npz "$samples" --quiet)
  pr=$("$cli" eval pr dataset:fmnist-test "$samples" --num "$num" --quiet)
  accuracy=$("$cli" eval accuracy "$samples" --quiet)
  "$python" - "$name" "$nfe" "$fd" "$pr" "$accuracy" >> "$points" <<'PY'
import json, sys
name, nfe, fd, pr, accuracy = sys.argv[1], int(sys.argv[2]), *map(json.loads, sys.argv[3:])
print(json.dumps({"name": name, "nfe": nfe, "fd_fmnist": fd["value"], "precision": pr["precision"], "recall": pr["recall"],
                  "class_accuracy": accuracy["value"]}))
PY
  rm -f "$samples"
}

# teacher SAMPLER STEPS NFE
teacher() {
  local name="teacher ($1)"
  grep -q "\"name\": \"$name\", \"nfe\": $3," "$points" && return 0
  "$cli" sample --teacher assets/teachers/fmnist.safetensors --sampler "$1" --steps "$2" --num "$num" --seed 2000 --labels all \
    --out "$out/samples.safetensors"
  measure "$name" "$3" "$out/samples.safetensors"
}
for student in "$@"; do
  name=${student%=*} model=${student##*=}
  for steps in 1 2 4 8; do
    grep -q "\"name\": \"$name\", \"nfe\": $steps," "$points" && continue
    # A student offers only the step counts its file lists; the others are skipped.
    "$cli" generate --model "$model" --steps "$steps" --num "$num" --seed 2000 --labels all --out "$out/samples.safetensors" \
      > "$out/generate.log" 2>&1 || { grep -q "no σ grid for this number of steps" "$out/generate.log" && continue; cat "$out/generate.log"; exit 1; }
    measure "$name" "$steps" "$out/samples.safetensors"
  done
done

# The teacher last and cheapest first: its 35-NFE point alone takes longer than all the students.
teacher dpmpp-2m 4 4
teacher dpmpp-2m 8 8
for steps in 5 9 18; do teacher heun "$steps" $((2 * steps - 1)); done

"$python" - "$out" "$num" <<'PY'
import collections, json, sys
out, num = sys.argv[1], int(sys.argv[2])
rows = [json.loads(line) for line in open(f"{out}/points.jsonl")]
series = collections.OrderedDict()
for row in rows:
    series.setdefault(row["name"], []).append(row)
with open(f"{out}/table.md", "w") as table:
    table.write(f"| model | NFE | FD_fmnist | precision | recall | class accuracy |\n|---|---|---|---|---|---|\n")
    for name, points in series.items():
        for p in sorted(points, key=lambda p: p["nfe"]):
            table.write(f"| {name} | {p['nfe']} | {p['fd_fmnist']:.2f} | {p['precision']:.3f} | {p['recall']:.3f} | {100 * p['class_accuracy']:.1f}% |\n")
plot = {"title": f"FD_fmnist against NFE ({num:,} samples per point)",
        "series": [{"name": name, "x": [p["nfe"] for p in sorted(points, key=lambda p: p["nfe"])],
                    "y": [p["fd_fmnist"] for p in sorted(points, key=lambda p: p["nfe"])]} for name, points in series.items()]}
json.dump(plot, open(f"{out}/plot.json", "w"))
# One plot per family as well, each with the teacher's curves: all series in one are too many to tell apart.
families = {"consistency": ["CD", "ECT", "iCT", "sCD", "CTM"], "pd-reflow": ["PD", "2-RF", "InstaFlow", "SlimFlow"],
            "matching-adversarial": ["DMD2", "LADD", "ADD", "Diffusion2GAN", "MSD", "DisBack"]}
titles = {"consistency": "consistency", "pd-reflow": "progressive distillation and rectified flow",
          "matching-adversarial": "distribution matching and adversarial"}
method = lambda name: name.split()[0].rstrip(",")
for family, methods in families.items():
    chosen = [s for s in plot["series"] if method(s["name"]) in methods + ["teacher"]]
    json.dump({"title": f"FD_fmnist against NFE, {titles[family]} ({num:,} samples per point)", "series": chosen},
              open(f"{out}/plot-{family}.json", "w"))
# And one series per method, the run with its best one-step figure (its best figure where it has no
# one-step point), beside the teacher's curves: where the project stands at a glance.
best = collections.OrderedDict()
rank = lambda s: (0, s["y"][0]) if s["x"][0] == 1 else (1, min(s["y"]))
for s in plot["series"]:
    key = s["name"] if method(s["name"]) == "teacher" else method(s["name"])
    if key not in best or rank(s) < rank(best[key]):
        best[key] = s
json.dump({"title": f"FD_fmnist against NFE, each method's best run ({num:,} samples per point)", "series": list(best.values())},
          open(f"{out}/plot-best.json", "w"))
PY
"$cli" plot --data "$out/plot.json" --out "$out/fd_vs_nfe.png" --log-x --log-y
for family in best consistency pd-reflow matching-adversarial; do
  "$cli" plot --data "$out/plot-$family.json" --out "$out/fd_vs_nfe-$family.png" --log-x --log-y
done
cat "$out/table.md"
