"""PyTorch twin of distillery's MLP denoiser network (src/models/mlp.cpp), same parameter names."""
import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, shape=(2,), hidden=128, layers=3, embedding=32, num_classes=0, label_dropout=0.1):
        super().__init__()
        dim = math.prod(shape)
        self.embedding, self.num_classes, self.label_dropout = embedding, num_classes, label_dropout
        self.input = nn.Linear(dim, hidden)
        self.noise = nn.Linear(embedding, hidden)
        self.label = nn.Linear(num_classes, hidden, bias=False) if num_classes > 0 else None
        self.hidden = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.output = nn.Linear(hidden, dim)

    def forward(self, x_in, c_noise, labels=None):
        half = self.embedding // 2
        frequencies = torch.pow(torch.tensor(1e-4), torch.arange(half, dtype=torch.float32) / max(half - 1, 1))
        angles = torch.outer(c_noise.to(x_in.dtype), frequencies.to(x_in.dtype))
        h = self.input(x_in.reshape(x_in.shape[0], -1)) + self.noise(torch.cat([angles.cos(), angles.sin()], dim=1))
        if self.label is not None:
            one_hot = F.one_hot(labels.clamp_min(0), self.num_classes).to(x_in.dtype) * (labels >= 0)[:, None]
            if self.training and self.label_dropout > 0:
                one_hot = one_hot * (torch.rand(one_hot.shape[0], 1) >= self.label_dropout)
            h = h + self.label(one_hot)
        for layer in self.hidden:
            h = h + layer(F.silu(h))
        return self.output(F.silu(h)).reshape(x_in.shape)
