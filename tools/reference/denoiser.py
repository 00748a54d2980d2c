"""PyTorch twin of distillery's trainable denoisers (src/models/network_denoiser.cpp): the
preconditioning of the file's parameterisation (src/models/precond.cpp: EDM, VP, VE, rectified
flow, the consistency boundary condition, TrigFlow, discrete DDPM) around the UNet
(tools/reference/unet.py), the MLP (tools/reference/mlp.py), EDM's and EDM2's published
networks (tools/reference/edm_networks.py) or DiT (tools/reference/dit.py).

Parameter and buffer names are identical, so weights move both ways through safetensors:

    net = NetworkDenoiser.from_safetensors("teacher.safetensors")   # a file distillery wrote
    denoised = net(x, sigma, labels)                            # labels: int64, -1 = no label
    net.save_safetensors("out.safetensors")                     # a file distillery loads

Keep the twins in step: the parity tests (tests/test_interop.cpp) run both on the same weights.
"""
import functools
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import DiT  # noqa: E402
from edm_networks import DhariwalUNet, Edm2UNet, SongUNet  # noqa: E402
from mlp import MLP  # noqa: E402
from unet import UNet  # noqa: E402

FORMAT = "distillery.denoiser"


@functools.cache
def ddpm_sigmas():
    """σ_j of DDPM's linear β schedule (1e-4 to 0.02 over 1000 steps), DiT's, in float64."""
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    return torch.from_numpy(np.sqrt(1 / alpha_bar - 1))


def ddpm_timestep(sigma):
    """j at σ_j, linear in log σ between and beyond them."""
    table = ddpm_sigmas().log().to(sigma.device)
    log_sigma = sigma.double().log()
    upper = torch.searchsorted(table, log_sigma).clamp(1, len(table) - 1)
    lower = upper - 1
    return (lower + (log_sigma - table[lower]) / (table[upper] - table[lower])).to(sigma.dtype)


def precondition(parameterization, sigma, sigma_data, sigma_min):
    """c_skip, c_out, c_in, c_noise as functions of σ (Karras et al. 2022, Table 1, and the
    parameterisations that src/models/precond.cpp converts to it)."""
    sd = sigma_data
    if parameterization in ("edm", "consistency"):
        norm = (sigma ** 2 + sd ** 2).sqrt()
        if parameterization == "edm":
            return sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / norm, 1 / norm, sigma.log() / 4
        return sd ** 2 / ((sigma - sigma_min) ** 2 + sd ** 2), (sigma - sigma_min) * sd / norm, 1 / norm, sigma.log() / 4
    one = torch.ones_like(sigma)
    if parameterization == "vp":  # β_min 0.1, β_d 19.9, M 1000
        t = ((0.1 ** 2 + 2 * 19.9 * (sigma ** 2).log1p()).sqrt() - 0.1) / 19.9
        return one, -sigma, 1 / (sigma ** 2 + 1).sqrt(), 999 * t
    if parameterization == "ve":
        return one, sigma, one, (0.5 * sigma).log()
    if parameterization == "rectified-flow":
        scale = 1 / (1 + sigma)
        return scale, -sigma * scale, scale, sigma * scale
    if parameterization == "ddpm":
        return one, -sigma, 1 / (sigma ** 2 + 1).sqrt(), ddpm_timestep(sigma)
    if parameterization == "trigflow":
        t = (sigma / sd).atan()
        return t.cos() ** 2, -sd * t.sin(), t.cos() / sd, t
    raise ValueError(f"unknown parameterization {parameterization!r}")


class NetworkDenoiser(nn.Module):
    """D(x; σ) = c_skip x + c_out F(c_in x; c_noise) with the file's parameterisation."""

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
        elif kind in ("song_unet", "dhariwal_unet", "edm2_unet"):
            self.net = {"song_unet": SongUNet, "dhariwal_unet": DhariwalUNet, "edm2_unet": Edm2UNet}[kind](**model)
            self.sample_shape = [model["in_channels"], model["resolution"], model["resolution"]]
        elif kind == "dit":
            self.net = DiT(**model)
            self.sample_shape = [model["in_channels"], model["resolution"], model["resolution"]]
        else:
            raise ValueError(f"unknown model kind {kind!r}: expected unet, mlp, song_unet, dhariwal_unet, edm2_unet or dit")
        self.num_classes = model.get("num_classes", 0)
        precond = config["precond"]
        self.parameterization = precond.get("parameterization", "edm")  # files from before it carry none
        self.sigma_data = precond["sigma_data"]
        self.sigma_min = precond.get("sigma_min", 0.002)

    def forward(self, x, sigma, labels=None):
        sigma = sigma.float()
        c_skip, c_out, c_in, c_noise = precondition(self.parameterization, sigma, self.sigma_data, self.sigma_min)
        per_sample = (-1, *([1] * (x.dim() - 1)))
        # DiT's learned-variance channels, beyond the sample's, are not part of D.
        raw = self.net(c_in.reshape(per_sample) * x, c_noise, labels)[:, :x.shape[1]]
        return c_skip.reshape(per_sample) * x + c_out.reshape(per_sample) * raw

    @staticmethod
    def from_safetensors(path):
        from safetensors import safe_open
        from safetensors.torch import load_file
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
        if metadata.get("format") != FORMAT:
            raise ValueError(f"{path}: not a distillery denoiser file (metadata format {metadata.get('format')!r})")
        model = NetworkDenoiser(json.loads(metadata["config"]))
        model.net.load_state_dict(load_file(path), strict=True)
        return model.eval()

    def save_safetensors(self, path):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, path,
                  metadata={"format": FORMAT, "format_version": "1", "config": json.dumps(self.config)})
