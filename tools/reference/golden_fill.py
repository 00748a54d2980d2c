"""The deterministic weights of the golden test vectors (tests/golden/), so that a vector needs
only its inputs and outputs, not the network's weights.

Every tensor of the state dict except those the architecture fixes (EDM's resampling filters,
DiT's sin-cos positions) is set, k-th in sorted name order, from v_i = sin(0.7·i + 1.3·k + 0.5) over its
flattened elements (computed in float64, stored as float32):
  - tensors of 2 or more dimensions (weights): v · 1.5 / sqrt(fan_in), fan_in = product of all
    dimensions but the first;
  - Fourier frequencies (names ending in "freqs"): 4·v;
  - other names ending in ".weight" (norm gains): 1 + 0.2·v;
  - the rest (biases): 0.1·v.
tests/test_edm_networks.cpp implements the same rule in C++.
"""
import math

import numpy as np
import torch


FIXED_BY_ARCHITECTURE = ("resample_filter", "pos_embed")


def golden_value(name, shape, k):
    n = int(np.prod(shape)) if len(shape) else 1
    v = np.sin(0.7 * np.arange(n, dtype=np.float64) + 1.3 * k + 0.5)
    if len(shape) >= 2:
        v = v * 1.5 / math.sqrt(int(np.prod(shape[1:])))
    elif name.endswith("freqs"):
        v = 4 * v
    elif name.endswith(".weight"):
        v = 1 + 0.2 * v
    else:
        v = 0.1 * v
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def golden_fill(module, rename=lambda name: name):
    """Sets `module`'s tensors by the rule, ordered and named by `rename(name)`: the names the
    tensors have in distillery (EDM2's `unet.` prefix dropped)."""
    state = {rename(name): tensor for name, tensor in module.state_dict().items()}
    names = sorted(name for name in state if not name.endswith(FIXED_BY_ARCHITECTURE))
    with torch.no_grad():
        for k, name in enumerate(names):
            state[name].copy_(golden_value(name, list(state[name].shape), k))
    return module
