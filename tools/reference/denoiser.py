"""PyTorch twin of distillery's trainable denoisers (src/models/network_denoiser.cpp): EDM
preconditioning around the UNet (tools/reference/unet.py) or the MLP (tools/reference/mlp.py).

Parameter and buffer names are identical, so weights move both ways through safetensors:

    net = EDMDenoiser.from_safetensors("teacher.safetensors")   # a file distillery wrote
    denoised = net(x, sigma, labels)                            # labels: int64, -1 = no label
    net.save_safetensors("out.safetensors")                     # a file distillery loads

Keep the twins in step: the parity tests (tests/test_interop.cpp) run both on the same weights.
"""
import json
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlp import MLP  # noqa: E402
from unet import UNet  # noqa: E402

FORMAT = "distillery.denoiser"


class EDMDenoiser(nn.Module):
    """D(x; σ) = c_skip x + c_out F(c_in x; ln(σ)/4) (Karras et al. 2022, Table 1)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        model = dict(config["model"])
        kind = model.pop("kind", "unet")  # files from before the MLP carry no kind
        if kind == "unet":
            self.net = UNet(**model)
            self.sample_shape = [model["in_channels"], model["resolution"], model["resolution"]]
        elif kind == "mlp":
            self.net = MLP(**model)
            self.sample_shape = list(model["shape"])
        else:
            raise ValueError(f"unknown model kind {kind!r}: expected unet or mlp")
        self.num_classes = model.get("num_classes", 0)
        self.sigma_data = config["precond"]["sigma_data"]

    def forward(self, x, sigma, labels=None):
        sigma = sigma.float().reshape(-1, *([1] * (x.dim() - 1)))
        sd = self.sigma_data
        c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
        c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
        c_in = 1 / (sd ** 2 + sigma ** 2).sqrt()
        return c_skip * x + c_out * self.net(c_in * x, sigma.flatten().log() / 4, labels)

    @staticmethod
    def from_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a distillery denoiser file (metadata format {metadata.get('format')!r})")
        model = EDMDenoiser(json.loads(metadata["config"]))
        model.net.load_state_dict(load_file(path), strict=True)
        return model.eval()

    def save_safetensors(self, path):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, path,
                  metadata={"format": FORMAT, "format_version": "1", "config": json.dumps(self.config)})
