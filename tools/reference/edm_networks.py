"""PyTorch twins of distillery's versions of EDM's and EDM2's published networks
(src/models/song_unet.cpp, src/models/dhariwal_unet.cpp, src/models/edm_layers.cpp,
src/models/edm2_unet.cpp): DDPM++/NCSN++ as SongUNet, ADM as DhariwalUNet and EDM2's UNet as
Edm2UNet, built from distillery's config keys, with the parameter and buffer names of the
published state dicts (enc.32x32_block0.conv0.weight, map_noise.freqs, emb_fourier.phases, ...).

Both take (x_in, c_noise, labels): x_in already scaled by c_in, labels int64 with -1 for "no
label" (EDM's all-zero class vector). Augmentation labels are never fed, as at inference.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F


def _group_norm(channels, eps):
    return nn.GroupNorm(num_groups=min(32, channels // 4), num_channels=channels, eps=eps)


class Conv2d(nn.Module):
    """Convolution (kernel 0: none) with 2x up- or downsampling by a separable FIR filter,
    applied before the convolution, or after it when fused (downsampling only)."""

    def __init__(self, cin, cout, kernel, bias=True, up=False, down=False, resample_filter=(1, 1), fused=False):
        super().__init__()
        self.cin, self.cout, self.up, self.down, self.fused = cin, cout, up, down, fused
        self.weight = nn.Parameter(torch.zeros(cout, cin, kernel, kernel)) if kernel else None
        self.bias = nn.Parameter(torch.zeros(cout)) if kernel and bias else None
        f = torch.tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2
        self.register_buffer("resample_filter", f if up or down else None)

    def forward(self, x):
        w, f = self.weight, self.resample_filter
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused:
            x = F.conv2d(x, w, padding=w_pad + f_pad)
            x = F.conv2d(x, f.tile(self.cout, 1, 1, 1), groups=self.cout, stride=2)
        else:
            if self.up:
                x = F.conv_transpose2d(x, (4 * f).tile(self.cin, 1, 1, 1), groups=self.cin, stride=2, padding=f_pad)
            if self.down:
                x = F.conv2d(x, f.tile(self.cin, 1, 1, 1), groups=self.cin, stride=2, padding=f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x + self.bias.reshape(1, -1, 1, 1) if self.bias is not None else x


class UNetBlock(nn.Module):
    def __init__(self, cin, cout, emb, up=False, down=False, attention=False, num_heads=None, channels_per_head=64, dropout=0.0,
                 skip_scale=1.0, eps=1e-5, resample_filter=(1, 1), resample_proj=False, adaptive_scale=True):
        super().__init__()
        self.in_channels, self.out_channels = cin, cout
        self.num_heads = 0 if not attention else (num_heads if num_heads else cout // channels_per_head)
        self.dropout, self.skip_scale, self.adaptive_scale = dropout, skip_scale, adaptive_scale
        self.norm0 = _group_norm(cin, eps)
        self.conv0 = Conv2d(cin, cout, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = nn.Linear(emb, cout * (2 if adaptive_scale else 1))
        self.norm1 = _group_norm(cout, eps)
        self.conv1 = Conv2d(cout, cout, 3)
        self.skip = None
        if cout != cin or up or down:
            self.skip = Conv2d(cin, cout, 1 if resample_proj or cout != cin else 0, up=up, down=down, resample_filter=resample_filter)
        if self.num_heads:
            self.norm2 = _group_norm(cout, eps)
            self.qkv = Conv2d(cout, 3 * cout, 1)
            self.proj = Conv2d(cout, cout, 1)

    def forward(self, x, emb):
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.affine(emb)[:, :, None, None]
        if self.adaptive_scale:
            scale, shift = params.chunk(2, dim=1)
            h = F.silu(shift + self.norm1(h) * (scale + 1))
        else:
            h = F.silu(self.norm1(h + params))
        h = self.conv1(F.dropout(h, p=self.dropout, training=self.training))
        h = (h + (self.skip(x) if self.skip is not None else x)) * self.skip_scale
        if self.num_heads:
            n, c, height, width = h.shape
            d = c // self.num_heads
            # channels of the projection: [head][channel][q, k, v]
            q, k, v = self.qkv(self.norm2(h)).reshape(n, self.num_heads, d, 3, height * width).permute(3, 0, 1, 4, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1) @ v
            h = (self.proj(a.transpose(2, 3).reshape(n, c, height, width)) + h) * self.skip_scale
        return h


def positional_embedding(c_noise, channels, endpoint):
    half = channels // 2
    j = torch.arange(half, dtype=torch.float32) / (half - (1 if endpoint else 0))
    angles = torch.outer(c_noise, torch.pow(1e-4, j))
    return torch.cat([angles.cos(), angles.sin()], dim=1)


class FourierEmbedding(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("freqs", torch.randn(channels // 2) * 16)

    def forward(self, c_noise):
        angles = torch.outer(c_noise, 2 * math.pi * self.freqs)
        return torch.cat([angles.cos(), angles.sin()], dim=1)


def one_hot(labels, num_classes, dropout, training):
    rows = F.one_hot(labels.clamp(min=0), num_classes).float() * (labels >= 0).float()[:, None]
    if training and dropout > 0:
        rows = rows * (torch.rand(rows.shape[0], 1) >= dropout).float()
    return rows


class SongUNet(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, resolution=32, model_channels=128, channel_mult=(1, 2, 2, 2), channel_mult_emb=4,
                 blocks_per_level=4, attn_resolutions=(16,), dropout=0.1, num_classes=0, augment_dim=0, label_dropout=0.0,
                 noise_embedding="positional", channel_mult_noise=1, encoder_type="standard", decoder_type="standard",
                 resample_filter=(1, 1)):
        super().__init__()
        self.num_classes, self.label_dropout = num_classes, label_dropout
        emb, noise = model_channels * channel_mult_emb, model_channels * channel_mult_noise
        self.noise_channels = noise
        block = dict(emb=emb, num_heads=1, dropout=dropout, skip_scale=math.sqrt(0.5), eps=1e-6, resample_filter=resample_filter,
                     resample_proj=True, adaptive_scale=False)
        self.map_noise = FourierEmbedding(noise) if noise_embedding == "fourier" else None
        self.map_label = nn.Linear(num_classes, noise) if num_classes else None
        self.map_augment = nn.Linear(augment_dim, noise, bias=False) if augment_dim else None
        self.map_layer0 = nn.Linear(noise, emb)
        self.map_layer1 = nn.Linear(emb, emb)
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        cout = caux = in_channels
        skips = []
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[p + "conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[p + "down"] = UNetBlock(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[p + "aux_down"] = Conv2d(caux, caux, 0, down=True, resample_filter=resample_filter)
                    self.enc[p + "aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[p + "aux_residual"] = Conv2d(caux, cout, 3, down=True, resample_filter=resample_filter, fused=True)
                    caux = cout
            skips.append(cout)
            for i in range(blocks_per_level):
                cin, cout = cout, model_channels * mult
                self.enc[p + f"block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
                skips.append(cout)
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == len(channel_mult) - 1:
                self.dec[p + "in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[p + "in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[p + "up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(blocks_per_level + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[p + f"block{i}"] = UNetBlock(cin, cout, attention=i == blocks_per_level and res in attn_resolutions, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[p + "aux_up"] = Conv2d(out_channels, out_channels, 0, up=True, resample_filter=resample_filter)
                self.dec[p + "aux_norm"] = _group_norm(cout, 1e-6)
                self.dec[p + "aux_conv"] = Conv2d(cout, out_channels, 3)

    def forward(self, x, c_noise, labels=None):
        c_noise = c_noise.float()
        emb = self.map_noise(c_noise) if self.map_noise is not None else positional_embedding(c_noise, self.noise_channels, True)
        emb = emb.reshape(emb.shape[0], 2, -1).flip(1).reshape(emb.shape)  # sin before cos
        if self.map_label is not None:
            emb = emb + self.map_label(one_hot(labels, self.num_classes, self.label_dropout, self.training) * math.sqrt(self.num_classes))
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))
        skips, aux = [], x
        for name, module in self.enc.items():
            if "aux_down" in name:
                aux = module(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + module(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + module(aux)) / math.sqrt(2)
            else:
                x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
                skips.append(x)
        out = normed = None
        for name, module in self.dec.items():
            if "aux_up" in name:
                out = module(out)
            elif "aux_norm" in name:
                normed = module(x)
            elif "aux_conv" in name:
                level_out = module(F.silu(normed))
                out = level_out if out is None else level_out + out
            else:
                if x.shape[1] != module.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = module(x, emb)
        return out


class DhariwalUNet(nn.Module):
    def __init__(self, in_channels=3, out_channels=3, resolution=64, model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_emb=4,
                 blocks_per_level=3, attn_resolutions=(32, 16, 8), dropout=0.1, num_classes=0, augment_dim=0, label_dropout=0.0):
        super().__init__()
        self.model_channels, self.num_classes, self.label_dropout = model_channels, num_classes, label_dropout
        emb = model_channels * channel_mult_emb
        block = dict(emb=emb, channels_per_head=64, dropout=dropout)
        self.map_augment = nn.Linear(augment_dim, model_channels, bias=False) if augment_dim else None
        self.map_layer0 = nn.Linear(model_channels, emb)
        self.map_layer1 = nn.Linear(emb, emb)
        self.map_label = nn.Linear(num_classes, emb, bias=False) if num_classes else None
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        cout = in_channels
        skips = []
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[p + "conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[p + "down"] = UNetBlock(cout, cout, down=True, **block)
            skips.append(cout)
            for i in range(blocks_per_level):
                cin, cout = cout, model_channels * mult
                self.enc[p + f"block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
                skips.append(cout)
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == len(channel_mult) - 1:
                self.dec[p + "in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[p + "in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[p + "up"] = UNetBlock(cout, cout, up=True, **block)
            for i in range(blocks_per_level + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[p + f"block{i}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        self.out_norm = _group_norm(cout, 1e-5)
        self.out_conv = Conv2d(cout, out_channels, 3)

    def forward(self, x, c_noise, labels=None):
        emb = self.map_layer1(F.silu(self.map_layer0(positional_embedding(c_noise.float(), self.model_channels, False))))
        if self.map_label is not None:
            emb = emb + self.map_label(one_hot(labels, self.num_classes, self.label_dropout, self.training))
        emb = F.silu(emb)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, UNetBlock) else module(x)
            skips.append(x)
        for module in self.dec.values():
            if x.shape[1] != module.in_channels:
                x = torch.cat([x, skips.pop()], dim=1)
            x = module(x, emb)
        return self.out_conv(F.silu(self.out_norm(x)))


# ---- EDM2's magnitude-preserving UNet (src/models/edm2_unet.cpp) ---------------------------------

def mp_normalize(x, dim=None, eps=1e-4):
    dim = list(range(1, x.ndim)) if dim is None else dim
    norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True, dtype=torch.float32)
    return x / (norm * math.sqrt(norm.numel() / x.numel()) + eps).to(x.dtype)


def mp_silu(x):
    return F.silu(x) / 0.596


def mp_sum(a, b, t):
    return a.lerp(b, t) / math.sqrt((1 - t) ** 2 + t ** 2)


def mp_cat(a, b, t):
    na, nb = a.shape[1], b.shape[1]
    c = math.sqrt((na + nb) / ((1 - t) ** 2 + t ** 2))
    return torch.cat([a * (c / math.sqrt(na) * (1 - t)), b * (c / math.sqrt(nb) * t)], dim=1)


def box_resample(x, mode):
    if mode == "keep":
        return x
    c = x.shape[1]
    f = torch.full([c, 1, 2, 2], 0.25, dtype=x.dtype)
    return F.conv2d(x, f, groups=c, stride=2) if mode == "down" else F.conv_transpose2d(x, 4 * f, groups=c, stride=2)


class MPConv(nn.Module):
    def __init__(self, cin, cout, kernel):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, kernel, kernel) if kernel else torch.randn(cout, cin))

    def forward(self, x, gain=1):
        w = self.weight.float()
        if self.training:
            with torch.no_grad():
                self.weight.copy_(mp_normalize(w))
        w = mp_normalize(w) * (gain / math.sqrt(w[0].numel()))
        return x @ w.t() if w.ndim == 2 else F.conv2d(x, w, padding=w.shape[-1] // 2)


class MPFourier(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(channels))
        self.register_buffer("phases", 2 * math.pi * torch.rand(channels))

    def forward(self, x):
        return (torch.outer(x.float(), self.freqs) + self.phases).cos() * math.sqrt(2)


class Edm2Block(nn.Module):
    def __init__(self, cin, cout, emb, encoder, resample, attention, channels_per_head, dropout, res_balance, attn_balance, clip_act):
        super().__init__()
        self.encoder, self.resample, self.dropout = encoder, resample, dropout
        self.res_balance, self.attn_balance, self.clip_act = res_balance, attn_balance, clip_act
        self.num_heads = cout // channels_per_head if attention else 0
        self.emb_gain = nn.Parameter(torch.zeros([]))
        self.conv_res0 = MPConv(cout if encoder else cin, cout, 3)
        self.emb_linear = MPConv(emb, cout, 0)
        self.conv_res1 = MPConv(cout, cout, 3)
        self.conv_skip = MPConv(cin, cout, 1) if cin != cout else None
        if self.num_heads:
            self.attn_qkv = MPConv(cout, 3 * cout, 1)
            self.attn_proj = MPConv(cout, cout, 1)

    def forward(self, x, emb):
        x = box_resample(x, self.resample)
        if self.encoder:
            if self.conv_skip is not None:
                x = self.conv_skip(x)
            x = mp_normalize(x, dim=[1])
        y = self.conv_res0(mp_silu(x))
        y = mp_silu(y * (self.emb_linear(emb, gain=self.emb_gain) + 1)[:, :, None, None])
        if self.training and self.dropout:
            y = F.dropout(y, p=self.dropout)
        y = self.conv_res1(y)
        if not self.encoder and self.conv_skip is not None:
            x = self.conv_skip(x)
        x = mp_sum(x, y, self.res_balance)
        if self.num_heads:
            n, c, height, width = x.shape
            q, k, v = mp_normalize(self.attn_qkv(x).reshape(n, self.num_heads, -1, 3, height * width), dim=[2]).unbind(3)
            w = torch.softmax(q.transpose(-1, -2) @ k / math.sqrt(q.shape[2]), dim=-1)
            y = (v @ w.transpose(-1, -2)).reshape(n, c, height, width)
            x = mp_sum(x, self.attn_proj(y), self.attn_balance)
        return x.clamp(-self.clip_act, self.clip_act) if self.clip_act else x


class Edm2UNet(nn.Module):
    def __init__(self, in_channels=3, resolution=64, model_channels=192, channel_mult=(1, 2, 3, 4), channel_mult_noise=0, channel_mult_emb=0,
                 blocks_per_level=3, attn_resolutions=(16, 8), channels_per_head=64, dropout=0.0, num_classes=0, label_dropout=0.0,
                 label_balance=0.5, concat_balance=0.5, res_balance=0.3, attn_balance=0.3, clip_act=256, logvar_channels=128):
        super().__init__()
        self.num_classes, self.label_dropout, self.label_balance, self.concat_balance = num_classes, label_dropout, label_balance, concat_balance
        cnoise = model_channels * (channel_mult_noise or channel_mult[0])
        cemb = model_channels * (channel_mult_emb or max(channel_mult))
        block = dict(channels_per_head=channels_per_head, dropout=dropout, res_balance=res_balance, attn_balance=attn_balance, clip_act=clip_act)
        self.out_gain = nn.Parameter(torch.zeros([]))
        self.emb_fourier = MPFourier(cnoise)
        self.emb_noise = MPConv(cnoise, cemb, 0)
        self.emb_label = MPConv(num_classes, cemb, 0) if num_classes else None
        self.enc, self.dec = nn.ModuleDict(), nn.ModuleDict()
        cout, skips = in_channels + 1, []
        for level, mult in enumerate(channel_mult):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == 0:
                cin, cout = cout, model_channels * mult
                self.enc[p + "conv"] = MPConv(cin, cout, 3)
            else:
                self.enc[p + "down"] = Edm2Block(cout, cout, cemb, True, "down", False, **block)
            skips.append(cout)
            for i in range(blocks_per_level):
                cin, cout = cout, model_channels * mult
                self.enc[p + f"block{i}"] = Edm2Block(cin, cout, cemb, True, "keep", res in attn_resolutions, **block)
                skips.append(cout)
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = resolution >> level
            p = f"{res}x{res}_"
            if level == len(channel_mult) - 1:
                self.dec[p + "in0"] = Edm2Block(cout, cout, cemb, False, "keep", True, **block)
                self.dec[p + "in1"] = Edm2Block(cout, cout, cemb, False, "keep", False, **block)
            else:
                self.dec[p + "up"] = Edm2Block(cout, cout, cemb, False, "up", False, **block)
            for i in range(blocks_per_level + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                self.dec[p + f"block{i}"] = Edm2Block(cin, cout, cemb, False, "keep", res in attn_resolutions, **block)
        self.out_conv = MPConv(cout, in_channels, 3)
        self.logvar_fourier = MPFourier(logvar_channels)
        self.logvar_linear = MPConv(logvar_channels, 1, 0)

    def forward(self, x, c_noise, labels=None):
        emb = self.emb_noise(self.emb_fourier(c_noise))
        if self.emb_label is not None:
            rows = one_hot(labels, self.num_classes, self.label_dropout, self.training)
            emb = mp_sum(emb, self.emb_label(rows * math.sqrt(self.num_classes)), self.label_balance)
        emb = mp_silu(emb)
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        skips = []
        for module in self.enc.values():
            x = module(x, emb) if isinstance(module, Edm2Block) else module(x)
            skips.append(x)
        for name, module in self.dec.items():
            if "block" in name:
                x = mp_cat(x, skips.pop(), self.concat_balance)
            x = module(x, emb)
        return self.out_conv(x, gain=self.out_gain)
