# Sourced, from the checkout's root, by the sweeps that add one line per measured point to
# OUT/points.jsonl (fd_vs_nfe.sh, fd_cross_check.sh), with their OUT and NUM arguments. Sets out,
# num, python, cli and points. The file is kept across runs, so an interrupted sweep resumes.
out=$1 num=$2
python=.venv/bin/python
[ -x "$python" ] || python=python3
cli=build/distillery
mkdir -p "$out"
points="$out/points.jsonl"
touch "$points"
