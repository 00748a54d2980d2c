"""Reference side of the network parity tests, using the PyTorch twins in tools/reference/.

  check WEIGHTS IO            run the twin on IO's x/sigma/labels and compare with IO's `denoised`
  make CONFIG_JSON WEIGHTS IO build the twin (seeded random weights), write its weights and IO

Agreement is max|a − b| / max|b| ≤ 1e-5.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools", "reference"))
from denoiser import NetworkDenoiser  # noqa: E402

TOLERANCE = 1e-5


def main():
    torch.manual_seed(0)
    if sys.argv[1] == "check":
        model = NetworkDenoiser.from_safetensors(sys.argv[2])
        io = load_file(sys.argv[3])
        labels = io["labels"] if "labels" in io else None
        with torch.no_grad():
            got = model(io["x"], io["sigma"], labels)
        error = ((got - io["denoised"]).abs().max() / io["denoised"].abs().max()).item()
        print(f"max relative difference {error:.3e}")
        return 0 if error <= TOLERANCE else 1
    config = json.loads(sys.argv[2])
    model = NetworkDenoiser(config).eval()
    model.save_safetensors(sys.argv[3])
    x = torch.randn(4, *model.sample_shape)
    sigma = torch.tensor([0.01, 0.3, 2.0, 50.0])
    io = {"x": x, "sigma": sigma}
    if model.num_classes > 0:
        io["labels"] = torch.tensor([0, model.num_classes - 1, -1, 1])
    with torch.no_grad():
        io["denoised"] = model(x, sigma, io.get("labels"))
    save_file(io, sys.argv[4])
    return 0


if __name__ == "__main__":
    sys.exit(main())
