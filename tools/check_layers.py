#!/usr/bin/env python3
"""Checks that no directory includes a layer above it (docs/architecture.md, "Layers"), and
that no file includes LibTorch's whole C++ frontend.

Each directory of the library has a rank; a file may include headers of its own directory or
of a directory of lower rank, never of the same rank or higher. <torch/torch.h> doubles a
file's compile time against the headers it uses (<torch/types.h>, <torch/utils.h>, the nn or
optim header it names), and the build is most of the CI's budget. Prints every offending
#include with its file and line; exit status 1 when there is one.
"""
import pathlib
import re
import sys

# Lowest first. Directories of one rank do not include each other.
LAYERS = [
    ["src/core"],
    ["src/io", "kernels"],
    ["src/models", "src/data"],
    ["samplers"],
    # The trainer sees networks and sampling only: evaluation and grids are handed to it.
    ["src/train"],
    ["src/teachers"],
    ["src/trajectories"],
    ["src/eval"],
    ["distill/common"],
    ["distill", "src/teacher_training"],
    ["src/cli"],
]
RANK = {directory: rank for rank, group in enumerate(LAYERS) for directory in group}
# The include path each directory is reached by ("core/x.h" -> src/core, "distill/common/x.h"
# -> distill/common).
BY_PREFIX = {directory.removeprefix("src/"): directory for directory in RANK}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_/]+)/[^"/]+"')
WHOLE_FRONTEND = re.compile(r"^\s*#\s*include\s+<torch/torch\.h>")
SOURCE_DIRECTORIES = list(RANK) + ["tests", "bench", "tools"]


def violations(root: pathlib.Path):
    for directory, rank in RANK.items():
        for path in sorted((root / directory).glob("*")):
            if path.suffix not in {".h", ".cpp", ".cu", ".cuh"}:
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                match = INCLUDE.match(line)
                if not match or match.group(1) not in BY_PREFIX:
                    continue
                target = BY_PREFIX[match.group(1)]
                if target != directory and RANK[target] >= rank:
                    yield f"{path.relative_to(root)}:{number}: {directory} (layer {rank}) includes {target} (layer {RANK[target]}): {line.strip()}"
    sources = {path for directory in SOURCE_DIRECTORIES for path in (root / directory).rglob("*") if path.suffix in {".h", ".cpp", ".cu", ".cuh"}}
    for path in sorted(sources):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if WHOLE_FRONTEND.match(line):
                yield f"{path.relative_to(root)}:{number}: includes the whole C++ frontend; include the headers the file uses"


def main() -> int:
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent)
    missing = [d for d in RANK if not (root / d).is_dir()]
    if missing:
        print(f"check_layers: directories not found under {root}: {', '.join(missing)}")
        return 1
    found = list(violations(root))
    for line in found:
        print(line)
    print(f"check_layers: {len(found)} offending include(s); layer order: " + " < ".join("/".join(g) for g in LAYERS))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
