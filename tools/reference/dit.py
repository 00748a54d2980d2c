"""PyTorch twin of distillery's DiT (src/models/dit.cpp), built from distillery's config keys,
with the parameter and buffer names of DiT's published state dicts (x_embedder.proj.weight,
t_embedder.mlp.0.weight, y_embedder.embedding_table.weight, blocks.0.adaLN_modulation.1.weight,
final_layer.linear.weight, pos_embed, ...).

Takes (x_in, timestep, labels): labels int64 with -1 for the null class. Returns all output
channels: ε, then the learned variance's interpolation when learn_sigma is set.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

FREQUENCY_CHANNELS = 256


def sincos_positions(grid, hidden):
    """Token (row i, column j): sin and cos of j·ω_k, then of i·ω_k, ω_k = 10000^(−k/(D/4))."""
    quarter = hidden // 4
    omega = 10000.0 ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    index = torch.arange(grid, dtype=torch.float64)
    column, row = index.repeat(grid), index.repeat_interleave(grid)

    def half(position):
        angles = torch.outer(position, omega)
        return torch.cat([angles.sin(), angles.cos()], dim=1)
    return torch.cat([half(column), half(row)], dim=1).float()[None]


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


def layer_norm(x):
    return F.layer_norm(x, (x.shape[-1],), eps=1e-6)


class Attention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x):
        n, tokens, hidden = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, tokens, hidden))


class Mlp(nn.Module):
    def __init__(self, hidden, inner):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(hidden, inner), nn.Linear(inner, hidden)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    def __init__(self, hidden, heads, mlp_ratio):
        super().__init__()
        self.attn = Attention(hidden, heads)
        self.mlp = Mlp(hidden, int(hidden * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden))

    def forward(self, x, c):
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_a[:, None] * self.attn(modulate(layer_norm(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(modulate(layer_norm(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden, outputs):
        super().__init__()
        self.linear = nn.Linear(hidden, outputs)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x), shift, scale))


class PatchEmbed(nn.Module):
    def __init__(self, channels, hidden, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, hidden, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQUENCY_CHANNELS, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t):
        half = FREQUENCY_CHANNELS // 2
        freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000.0) / half))
        angles = t.float()[:, None] * freqs[None]
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=1))


class LabelEmbedder(nn.Module):
    def __init__(self, classes, hidden, null_class):
        super().__init__()
        self.classes = classes
        self.embedding_table = nn.Embedding(classes + int(null_class), hidden)

    def forward(self, labels):
        return self.embedding_table(torch.where(labels < 0, self.classes, labels))


class DiT(nn.Module):
    def __init__(self, in_channels=4, resolution=32, patch_size=2, hidden_size=1152, depth=28, num_heads=16, mlp_ratio=4.0,
                 num_classes=1000, label_dropout=0.1, learn_sigma=True):
        super().__init__()
        self.patch, self.grid = patch_size, resolution // patch_size
        self.x_embedder = PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, label_dropout > 0) if num_classes else None
        self.register_buffer("pos_embed", sincos_positions(self.grid, hidden_size))
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size * patch_size * (2 if learn_sigma else 1) * in_channels)

    def forward(self, x_in, timestep, labels=None):
        c = self.t_embedder(timestep)
        if self.y_embedder is not None:
            c = c + self.y_embedder(labels)
        x = self.x_embedder(x_in) + self.pos_embed
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        n, p, g = x.shape[0], self.patch, self.grid
        out_channels = x.shape[2] // (p * p)
        return x.reshape(n, g, g, p, p, out_channels).permute(0, 5, 1, 3, 2, 4).reshape(n, out_channels, g * p, g * p)
