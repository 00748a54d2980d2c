#!/usr/bin/env bash
# The in-loop FD of several training runs against the step, in one plot: each run's stats.jsonl
# lines that carry fd_fmnist (or fd_raw) become a series. Writes OUT.json (the plot's data) and
# OUT.png (`distillery plot`, FD on a log scale) and prints the table.
# Usage: tools/fd_vs_step.sh OUT.png NAME=RUN_DIR [NAME=RUN_DIR ...] (the directory is what follows the last =)
#   tools/fd_vs_step.sh docs/disback_vs_dmd2.png DMD2=runs/disback-base-dmd2 DisBack=runs/disback-fmnist
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n '2,6p' "$0"; exit 2; }
out=$1
shift
python=.venv/bin/python
[ -x "$python" ] || python=python3
"$python" - "${out%.png}.json" "$@" <<'PY'
import json, sys
path, runs = sys.argv[1], sys.argv[2:]
series, metric = [], None
for run in runs:
    name, directory = run.rsplit("=", 1)
    points = []
    with open(f"{directory}/stats.jsonl") as stats:
        for line in stats:
            row = json.loads(line)
            key = next((k for k in ("fd_fmnist", "fd_raw") if k in row), None)
            if key is None:
                continue
            if metric not in (None, key):
                sys.exit(f"fd_vs_step: {directory} logs {key}, the runs before it {metric}: one plot holds one metric")
            metric = key
            points.append((row["step"], row[key], row.get("eval_num")))
    if not points:
        sys.exit(f"fd_vs_step: {directory}/stats.jsonl has no in-loop FD (eval.every was 0)")
    series.append({"name": name, "x": [p[0] for p in points], "y": [p[1] for p in points], "num": points[0][2]})
nums = {s.pop("num") for s in series}
json.dump({"title": f"in-loop {metric} against the training step ({', '.join(map(str, sorted(nums)))} samples)", "series": series}, open(path, "w"))
steps = sorted({x for s in series for x in s["x"]})
print("| step | " + " | ".join(map(str, steps)) + " |")
print("|---|" + "---|" * len(steps))
for s in series:
    by_step = dict(zip(s["x"], s["y"]))
    print(f"| {s['name']} | " + " | ".join(f"{by_step[x]:.1f}" if x in by_step else "" for x in steps) + " |")
PY
build/distillery plot --data "${out%.png}.json" --out "$out" --log-y
