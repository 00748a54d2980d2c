"""Reference side of the evaluation tests, using numpy and pytorch-fid.

  fd DIR            for every DIR/case-*.npz (mu1, sigma1, mu2, sigma2) print {case: pytorch-fid's FD}
  npz-check FILE    print the arrays of a .npz written by distillery as JSON (shape, dtype, sum)
  npz-write DIR     write DIR/stored.npz (np.savez) and DIR/compressed.npz (np.savez_compressed)
"""
import glob
import json
import os
import sys

import numpy as np


def main():
    command, path = sys.argv[1], sys.argv[2]
    if command == "fd":
        from pytorch_fid.fid_score import calculate_frechet_distance
        values = {}
        for case in sorted(glob.glob(os.path.join(path, "case-*.npz"))):
            z = np.load(case)
            values[os.path.basename(case)] = float(calculate_frechet_distance(z["mu1"], z["sigma1"], z["mu2"], z["sigma2"]))
        print(json.dumps(values))
    elif command == "npz-check":
        z = np.load(path)
        print(json.dumps({k: {"shape": list(z[k].shape), "dtype": str(z[k].dtype), "sum": float(z[k].astype(np.float64).sum())} for k in z.files}))
    elif command == "npz-write":
        rng = np.random.default_rng(0)
        arrays = {"mu": rng.normal(size=5), "sigma": rng.normal(size=(5, 5)), "count": np.array([7], dtype=np.int64),
                  "pixels": rng.integers(0, 255, size=(2, 3), dtype=np.uint8), "f32": rng.normal(size=(4,)).astype(np.float32)}
        np.savez(os.path.join(path, "stored.npz"), **arrays)
        np.savez_compressed(os.path.join(path, "compressed.npz"), **arrays)
        print(json.dumps({k: float(v.astype(np.float64).sum()) for k, v in arrays.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
