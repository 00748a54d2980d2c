"""Reference side of the Inception parity test: pytorch-fid's own InceptionV3 with seeded random
weights (batch-norm statistics calibrated on random images so activations stay O(1)).

  inception_reference.py WEIGHTS_OUT IO_OUT   write the weights (safetensors, pytorch-fid names)
                                              and, per image size, uint8 images and their features
"""
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from convert_inception import build_fid_inception  # noqa: E402

SIZES = [28, 32, 64, 299, 512]


def main():
    torch.manual_seed(0)
    model = build_fid_inception()
    # Calibrate: cumulative batch-norm statistics of random images, then freeze.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(6, 3, 299, 299))
    model.eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
    rng = np.random.default_rng(1)
    io = {}
    for size in SIZES:
        channels = 1 if size == 28 else 3  # grey images are replicated to RGB
        images = rng.integers(0, 256, size=(2, channels, size, size), dtype=np.uint8)
        batch = torch.from_numpy(images).float() / 255  # what pytorch-fid's ToTensor gives
        if channels == 1:
            batch = batch.repeat(1, 3, 1, 1)
        with torch.no_grad():
            features = model(batch)[0].squeeze(3).squeeze(2)
        io[f"images{size}"] = torch.from_numpy(images)
        io[f"features{size}"] = features.double()
    save_file(io, sys.argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
