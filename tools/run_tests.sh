#!/usr/bin/env bash
# README's test command: installs what is missing, builds everything (library, CLI, tests,
# benchmarks), runs the GoogleTest suite through CTest, and replays the malformed-input corpus
# through the sanitizer-built parsers.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/bootstrap.sh"
source "$root/tools/build_env.sh"
build=${DISTILLERY_BUILD_DIR:-$root/build}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$build" -j2
ctest --test-dir "$build" --output-on-failure -j2
# The malformed-input corpus once more, through the parsers built with ASan and UBSan.
"$root/tools/replay_corpus.sh"
