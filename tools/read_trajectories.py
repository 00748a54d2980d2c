"""Read a distillery trajectory store with h5py (format v1, docs/formats.md).

    python tools/read_trajectories.py STORE_DIR              print a summary
    python tools/read_trajectories.py STORE_DIR --dump F     write every dataset, concatenated in
                                                             sample-index order, to F.safetensors

    from read_trajectories import load_store
    store = load_store("runs/traj")      # dict: x [N, T, *shape], sigmas [T], labels [N], ...
    noise = store["x"][:, 0] / store["sigmas"][0]; sample = store["x"][:, -1]

Only shards listed in manifest.jsonl count: a shard file without a manifest line may be the
leftover of a killed recording.
"""
import json
import os
import sys

import h5py
import numpy as np


def read_manifest(store_dir):
    entries = []
    with open(os.path.join(store_dir, "manifest.jsonl")) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"manifest.jsonl line {number} is not a complete entry") from None
    return sorted(entries, key=lambda e: e["shard"])


def load_store(store_dir):
    with open(os.path.join(store_dir, "store.json")) as f:
        settings = json.load(f)
    if settings.get("format") != "distillery.trajectories" or settings.get("format_version") != 1:
        raise ValueError(f"{store_dir}: not a version-1 distillery trajectory store")
    parts = {"x": [], "sample_index": [], "labels": [], "denoised": []}
    sigmas = None
    for entry in read_manifest(store_dir):
        with h5py.File(os.path.join(store_dir, entry["file"]), "r") as shard:
            if json.loads(shard.attrs["settings"]) != settings:
                raise ValueError(f"{entry['file']} was recorded with other settings than store.json")
            sigmas = shard["sigmas"][()]
            for name in parts:
                if name in shard:
                    parts[name].append(shard[name][()])
    store = {name: np.concatenate(arrays) for name, arrays in parts.items() if arrays}
    store["sigmas"] = sigmas
    store["settings"] = settings
    return store


def main():
    if len(sys.argv) not in (2, 4) or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    store = load_store(sys.argv[1])
    s = store["settings"]
    print(f"{len(store['sample_index'])} of {s['num']} trajectories, states {store['x'].shape[1:]} {store['x'].dtype}, "
          f"sampler {s['sampler']} {s['steps']} steps, teacher {s['teacher']} ({s['teacher_hash']})")
    if len(sys.argv) == 4 and sys.argv[2] == "--dump":
        from safetensors.numpy import save_file
        tensors = {name: np.ascontiguousarray(value.astype(np.float32) if value.dtype == np.float16 else value)
                   for name, value in store.items() if name != "settings"}
        save_file(tensors, sys.argv[3])
    return 0


if __name__ == "__main__":
    sys.exit(main())
