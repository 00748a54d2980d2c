#!/usr/bin/env bash
# Replays the malformed-input corpus (tests/corpus/) through the parsers built with ASan and
# UBSan, the fuzz targets: safetensors and denoiser files, .npz statistics, YAML recipes, the
# trajectory stores' store.json and manifest files, the inflated IDX files, the pickled CIFAR-10 batches and the PNG/JPEG images, each once. Any sanitizer report or crash fails it. (The whole corpus, with
# each command's exact error, runs through the CLI in the GoogleTest suite: Corpus/*.)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$root/tools/build_env.sh"
build="$root/build-fuzz"
CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DDISTILLERY_FUZZ=ON -DDISTILLERY_TESTS=OFF -DDISTILLERY_BENCHMARKS=OFF > /dev/null
cmake --build "$build" -j2 --target fuzz_safetensors fuzz_npz fuzz_config fuzz_store fuzz_idx fuzz_pickle fuzz_image
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
corpus="$root/tests/corpus"
inflated=$(mktemp -d)
trap 'rm -rf "$inflated"' EXIT
for file in "$corpus"/idx/*/*.gz; do
  name="$(basename "$(dirname "$file")")-$(basename "$file" .gz)"
  gzip -dc "$file" > "$inflated/$name" 2> /dev/null || cp "$file" "$inflated/$name"
done
replay() {
  local target=$1
  shift
  "$build/tests/fuzz/$target" "$@" > "$inflated/$target.log" 2>&1 || { cat "$inflated/$target.log"; echo "replay_corpus: $target failed" >&2; exit 1; }
  echo "replay_corpus: $target ran $# inputs clean"
}
replay fuzz_safetensors "$corpus"/safetensors/*.safetensors "$corpus"/denoiser/*.safetensors
replay fuzz_npz "$corpus"/npz/*.npz
replay fuzz_config "$corpus"/yaml/*.yaml
replay fuzz_store $(find "$corpus"/store -type f \( -name store.json -o -name manifest.jsonl \) | sort)
replay fuzz_idx "$inflated"/*-ubyte
replay fuzz_pickle "$corpus"/pickle/*/test_batch
replay fuzz_image $(find "$corpus"/images -name "*.png" -o -name "*.jpg" | sort)
