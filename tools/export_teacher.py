"""Export a PyTorch denoiser to the TorchScript form distillery loads as `torchscript:FILE`.

    python tools/export_teacher.py WEIGHTS.safetensors OUT.pt
        exports a distillery denoiser file through the PyTorch twin (tools/reference/denoiser.py)

    from export_teacher import export
    export(my_denoiser, sample_shape=[3, 32, 32], num_classes=10, sigma_min=0.002, sigma_max=80, path="t.pt")
        exports any module whose forward is (x, sigma, labels) -> denoised in the EDM sense
        (x = x0 + sigma * n; labels int64 with -1 for "no label")

TorchScript files can run arbitrary code paths and LibTorch's loader is not hardened against
hostile input: share and load them only between parties who trust each other. safetensors is
the default, safe format.
"""
import sys
from typing import List

import torch
from torch import nn


class ExportedDenoiser(nn.Module):
    sample_shape: List[int]
    num_classes: int
    sigma_min: float
    sigma_max: float

    def __init__(self, denoiser, sample_shape, num_classes, sigma_min, sigma_max):
        super().__init__()
        self.denoiser = denoiser
        self.sample_shape = list(sample_shape)
        self.num_classes = int(num_classes)
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma, labels)


def export(denoiser, sample_shape, num_classes, sigma_min, sigma_max, path):
    denoiser = denoiser.eval()
    labels = torch.zeros(2, dtype=torch.int64) if num_classes > 0 else torch.full((2,), -1, dtype=torch.int64)
    example = (torch.randn(2, *sample_shape), torch.tensor([0.5, 5.0]), labels)
    traced = torch.jit.trace(denoiser, example)
    # Scripting the wrapper keeps the interface attributes on the saved module.
    torch.jit.script(ExportedDenoiser(traced, sample_shape, num_classes, sigma_min, sigma_max)).save(path)


def main():
    if len(sys.argv) != 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0 if len(sys.argv) == 2 else 2
    sys.path.insert(0, __file__.rsplit("/", 1)[0] + "/reference")
    from denoiser import NetworkDenoiser
    model = NetworkDenoiser.from_safetensors(sys.argv[1])
    p = model.config["precond"]

    class Unconditional(nn.Module):
        """Maps the documented labels to what the twin expects (None when unconditional)."""

        def __init__(self, inner, conditional):
            super().__init__()
            self.inner, self.conditional = inner, conditional

        def forward(self, x, sigma, labels):
            return self.inner(x, sigma, labels if self.conditional else None)

    export(Unconditional(model, model.num_classes > 0), model.sample_shape, model.num_classes, p["sigma_min"], p["sigma_max"], sys.argv[2])
    print(f"wrote {sys.argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
