"""PyTorch twin of distillery's UNet (src/models/unet.cpp), same parameter and buffer names.
tools/reference/denoiser.py wraps it in EDM preconditioning and reads and writes weights files.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn


def norm_groups(channels):
    return max(1, min(32, channels // 4))


class UNetBlock(nn.Module):
    def __init__(self, cin, cout, emb_channels, dropout, attend, channels_per_head, resample):
        super().__init__()
        self.dropout, self.resample = dropout, resample
        self.heads = max(1, cout // channels_per_head)
        self.norm0 = nn.GroupNorm(norm_groups(cin), cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb_channels, 2 * cout)
        self.norm1 = nn.GroupNorm(norm_groups(cout), cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.attend = attend
        if attend:
            self.norm2 = nn.GroupNorm(norm_groups(cout), cout)
            self.qkv = nn.Conv2d(cout, 3 * cout, 1)
            self.proj = nn.Conv2d(cout, cout, 1)

    def resampled(self, x):
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x, emb):
        h = self.conv0(self.resampled(F.silu(self.norm0(x))))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(shift + self.norm1(h) * (scale + 1))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        residual = self.skip(self.resampled(x)) if self.skip is not None else self.resampled(x)
        out = (h + residual) * math.sqrt(0.5)
        if self.attend:
            n, c, height, width = out.shape
            q, k, v = self.qkv(self.norm2(out)).reshape(n, 3, self.heads, c // self.heads, height * width).permute(1, 0, 2, 4, 3).unbind(0)
            a = F.scaled_dot_product_attention(q, k, v).permute(0, 1, 3, 2).reshape(out.shape)
            out = (self.proj(a) + out) * math.sqrt(0.5)
        return out


class UNet(nn.Module):
    def __init__(self, in_channels=1, out_channels=1, resolution=28, model_channels=32, channel_mult=(1, 2, 2),
                 blocks_per_level=2, attn_resolutions=(7,), channels_per_head=32, dropout=0.1, num_classes=0,
                 label_dropout=0.1, noise_embedding="positional"):
        super().__init__()
        C, emb = model_channels, 4 * model_channels
        self.model_channels, self.num_classes, self.label_dropout = C, num_classes, label_dropout
        self.fourier = noise_embedding == "fourier"
        if self.fourier:
            self.register_buffer("fourier_frequencies", torch.randn(C // 2) * 16)
        self.map_label = nn.Linear(num_classes, C, bias=False) if num_classes > 0 else None
        self.map_layer0 = nn.Linear(C, emb)
        self.map_layer1 = nn.Linear(emb, emb)
        self.conv_in = nn.Conv2d(in_channels, C, 3, padding=1)
        self.enc, self.dec, self.dec_takes_skip = nn.ModuleList(), nn.ModuleList(), []
        skips, channels, res, levels = [C], C, resolution, len(channel_mult)
        block = lambda cin, cout, attend, resample="none": UNetBlock(cin, cout, emb, dropout, attend, channels_per_head, resample)
        for level, mult in enumerate(channel_mult):
            if level > 0:
                res //= 2
                self.enc.append(block(channels, channels, False, "down"))
                skips.append(channels)
            for _ in range(blocks_per_level):
                self.enc.append(block(channels, C * mult, res in attn_resolutions))
                channels = C * mult
                skips.append(channels)
        for level in reversed(range(levels)):
            if level == levels - 1:
                self.dec.append(block(channels, channels, True))
                self.dec.append(block(channels, channels, False))
                self.dec_takes_skip += [False, False]
            else:
                res *= 2
                self.dec.append(block(channels, channels, False, "up"))
                self.dec_takes_skip.append(False)
            for _ in range(blocks_per_level + 1):
                out = C * channel_mult[level]
                self.dec.append(block(channels + skips.pop(), out, res in attn_resolutions))
                self.dec_takes_skip.append(True)
                channels = out
        self.norm_out = nn.GroupNorm(norm_groups(channels), channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def embed(self, c_noise, labels):
        half = self.model_channels // 2
        if self.fourier:
            angles = torch.outer(c_noise.float(), self.fourier_frequencies * (2 * math.pi))
        else:
            j = torch.arange(half, dtype=torch.float32) / max(half - 1, 1)
            angles = torch.outer(c_noise.float(), torch.pow(torch.tensor(1e-4), j))
        emb = torch.cat([angles.cos(), angles.sin()], dim=1)
        if self.map_label is not None:
            one_hot = F.one_hot(labels.clamp_min(0), self.num_classes).float() * (labels >= 0)[:, None]
            if self.training and self.label_dropout > 0:
                one_hot = one_hot * (torch.rand(one_hot.shape[0], 1) >= self.label_dropout)
            emb = emb + self.map_label(one_hot * math.sqrt(self.num_classes))
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

    def forward(self, x_in, c_noise, labels=None):
        emb = self.embed(c_noise, labels)
        x = self.conv_in(x_in)
        skips = [x]
        for block in self.enc:
            x = block(x, emb)
            skips.append(x)
        for block, takes_skip in zip(self.dec, self.dec_takes_skip):
            if takes_skip:
                x = torch.cat([x, skips.pop()], dim=1)
            x = block(x, emb)
        return self.conv_out(F.silu(self.norm_out(x)))
