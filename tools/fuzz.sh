#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and fuzzes the
# safetensors reader, the .npy preamble parser, the IDX header parser, the .npz zip layer,
# YAML configs through the schema, the trajectory store's store.json and manifest, and the
# data-only unpickler (CIFAR-10's batches) and the PNG/JPEG decoding (libpng, libjpeg-turbo), each for the given number of seconds (default 60), starting
# from corpora of valid files (written by the reference Python packages where there are any).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=${1:-60}
"$root/tools/bootstrap.sh"
source "$root/tools/build_env.sh"
build="$root/build-fuzz"
CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DDISTILLERY_FUZZ=ON -DDISTILLERY_TESTS=OFF -DDISTILLERY_BENCHMARKS=OFF
cmake --build "$build" -j2 --target fuzz_safetensors fuzz_npy fuzz_idx fuzz_npz fuzz_config fuzz_store fuzz_pickle fuzz_image
py="$root/.venv/bin/python"
# Each target's corpus starts from valid inputs, written into the folder given.
seed_safetensors() { "$py" "$root/tests/python/safetensors_interop.py" write "$1/seed.safetensors"; }
seed_npy() { "$py" -c "import numpy as np, sys; d = sys.argv[1]; np.save(d + '/f8.npy', np.zeros((2, 3))); np.save(d + '/u1.npy', np.arange(5, dtype=np.uint8)); np.save(d + '/scalar.npy', np.float32(1))" "$1"; }
seed_idx() { "$py" -c "import struct, sys; d = sys.argv[1]; open(d + '/images', 'wb').write(struct.pack('>4I', 0x803, 2, 3, 3) + bytes(18)); open(d + '/labels', 'wb').write(struct.pack('>2I', 0x801, 4) + bytes([0, 1, 2, 9]))" "$1"; }
seed_npz() { "$py" -c "import numpy as np, sys; d = sys.argv[1]; np.savez(d + '/stored.npz', mu=np.zeros(3), sigma=np.eye(3)); np.savez_compressed(d + '/deflated.npz', mu=np.ones(2, np.float32), count=np.int64(5))" "$1"; }
seed_config() { cp "$root"/configs/*/*.yaml "$1/"; }
seed_store() { cp "$root"/tests/corpus/store/shard-missing/store.json "$1/"; cp "$root"/tests/corpus/store/shard-missing/manifest.jsonl "$1/"; }
# Small CIFAR-10 batches pickled the published way and at protocols 2 to 5.
seed_pickle() { "$py" "$root/tests/python/cifar10_fixture.py" "$1/fixture" >/dev/null && mv "$1"/fixture/cifar-10-batches-py/* "$1/" && rm -r "$1/fixture"; }
seed_image() { "$py" -c "
import sys, numpy as np
from PIL import Image
d = sys.argv[1]
rgb = (np.arange(7 * 9 * 3) % 256).astype(np.uint8).reshape(7, 9, 3)
Image.fromarray(rgb).save(d + '/rgb.png'); Image.fromarray(rgb).save(d + '/rgb.jpg', quality=90)
Image.fromarray(rgb[..., 0]).save(d + '/grey.png'); Image.fromarray(rgb[..., 0]).save(d + '/grey.jpg')
Image.fromarray(rgb).convert('P').save(d + '/palette.png'); Image.fromarray(rgb).save(d + '/interlaced.png', interlace=1)
Image.fromarray(rgb).convert('RGBA').save(d + '/alpha.png'); Image.fromarray(rgb).save(d + '/progressive.jpg', progressive=True)" "$1"; }
for target in safetensors npy idx npz config store pickle image; do
  corpus="$build/corpus-$target"
  mkdir -p "$corpus"
  "seed_$target" "$corpus"
  "$build/tests/fuzz/fuzz_$target" "$corpus" -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
