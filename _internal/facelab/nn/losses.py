"""Training losses as DFL defines them (dfl-spec §8.4), on NCHW float tensors in [0, 1].

Checked against DFL's own numbers in `dfl-golden/losses.npz` (DSSIM, Gaussian blur) and against
the golden SAEHD model's per-sample losses (`reference.npz` "lossbatch").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_KERNELS: dict[tuple, torch.Tensor] = {}


def _cached(key: tuple, make) -> torch.Tensor:  # noqa: ANN001
    if key not in _KERNELS:
        _KERNELS[key] = make()
    return _KERNELS[key]


def gaussian_kernel_dssim(size: int, sigma: float = 1.5) -> np.ndarray:
    """DFL's DSSIM window: softmax of -r^2/(2 sigma^2) on a size x size grid centred at (size-1)/2."""
    coords = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    g = coords**2 * (-0.5 / sigma**2)
    g = g.reshape(1, -1) + g.reshape(-1, 1)
    g = np.exp(g - g.max())
    return (g / g.sum()).astype(np.float32)


def dssim(img1: torch.Tensor, img2: torch.Tensor, filter_size: int, max_val: float = 1.0) -> torch.Tensor:
    """(1 - SSIM) / 2 per image and channel (N x C): Gaussian window sigma 1.5, VALID, DFL's maths."""
    c = img1.shape[1]
    key = ("dssim", filter_size, c, img1.device, img1.dtype)
    kernel = _cached(key, lambda: torch.from_numpy(gaussian_kernel_dssim(filter_size))
                     .to(img1.device, img1.dtype).expand(c, 1, filter_size, filter_size).contiguous())  # fmt: skip

    def reduce(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=c)

    c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
    mean0, mean1 = reduce(img1), reduce(img2)
    num0 = mean0 * mean1 * 2.0
    den0 = mean0.square() + mean1.square()
    luminance = (num0 + c1) / (den0 + c1)
    num1 = reduce(img1 * img2) * 2.0
    den1 = reduce(img1.square() + img2.square())
    cs = (num1 - num0 + c2) / (den1 - den0 + c2)
    return (1.0 - (luminance * cs).mean(dim=(2, 3))) / 2.0


def gaussian_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """leras' gaussian_blur: kernel max(3, int(4 sigma)) made odd, zero padding, per channel."""
    size = max(3, int(4 * radius))
    size += 1 - size % 2
    c = x.shape[1]

    def make() -> torch.Tensor:
        r = np.arange(size, dtype=np.float64) - math.floor(size / 2)
        g = np.exp(-(r**2) / (2 * radius**2))
        k = np.outer(g, g)
        k = (k / k.sum()).astype(np.float32)
        return torch.from_numpy(k).to(x.device, x.dtype).expand(c, 1, size, size).contiguous()

    kernel = _cached(("blur", size, float(radius), c, x.device, x.dtype), make)
    return F.conv2d(F.pad(x, (size // 2,) * 4), kernel, groups=c)


def dssim_filter_sizes(resolution: int) -> list[int]:
    """SAEHD's DSSIM windows: int(res/11.6), plus int(res/23.2) from 256 px up."""
    return [int(resolution / 11.6)] + ([int(resolution / 23.2)] if resolution >= 256 else [])


def structure_loss(target: torch.Tensor, pred: torch.Tensor, resolution: int) -> torch.Tensor:
    """Per-sample DSSIM term: 10*DSSIM below 256 px, 5*DSSIM(r/11.6) + 5*DSSIM(r/23.2) above."""
    sizes = dssim_filter_sizes(resolution)
    weight = 10.0 / len(sizes)
    return sum(weight * dssim(target, pred, k).mean(1) for k in sizes)


def mask_blur(mask: torch.Tensor, resolution: int) -> torch.Tensor:
    """SAEHD's soft training mask: 2 * clip(blur(mask, max(1, res//32)), 0, 0.5)."""
    return gaussian_blur(mask, max(1, resolution // 32)).clamp(0, 0.5) * 2


def reconstruction_loss(
    target: torch.Tensor,
    pred: torch.Tensor,
    target_mask: torch.Tensor,
    pred_mask: torch.Tensor,
    resolution: int,
    *,
    masked: bool = True,
    eyes_mouth: torch.Tensor | None = None,
    eyes_mouth_weight: float = 300.0,
) -> torch.Tensor:
    """One side's per-sample SAEHD loss: DSSIM + 10*MSE (+ eyes/mouth priority) + 10*mask MSE."""
    if masked:
        soft = mask_blur(target_mask, resolution)
        t, p = target * soft, pred * soft
    else:
        t, p = target, pred
    loss = structure_loss(t, p, resolution) + 10 * (t - p).square().mean(dim=(1, 2, 3))
    if eyes_mouth is not None:
        loss = loss + eyes_mouth_weight * (target * eyes_mouth - pred * eyes_mouth).abs().mean(dim=(1, 2, 3))
    return loss + 10 * (target_mask - pred_mask).square().mean(dim=(1, 2, 3))


def style_loss(a: torch.Tensor, b: torch.Tensor, blur_radius: int) -> torch.Tensor:
    """DFL's face-style loss: squared differences of per-channel means and stds after a blur."""
    a = gaussian_blur(a, blur_radius)
    b = gaussian_blur(b, blur_radius)
    ma, mb = a.mean(dim=(2, 3)), b.mean(dim=(2, 3))
    sa, sb = a.std(dim=(2, 3), unbiased=False), b.std(dim=(2, 3), unbiased=False)
    return ((ma - mb).square() + (sa - sb).square()).sum(1) / a.shape[1]


def total_variation_mse(x: torch.Tensor) -> torch.Tensor:
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).square().mean(dim=(1, 2, 3))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).square().mean(dim=(1, 2, 3))
    return dx + dy


def bce_with_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Per-sample mean binary cross entropy against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none").flatten(1).mean(1)


class CodeDiscriminator(nn.Module):
    """True-face code discriminator (df): 1 + code_res//8 strided convs, lrelu 0.1, 1x1 logit."""

    def __init__(self, in_ch: int, code_res: int, ch: int = 256):
        super().__init__()
        n = 1 + code_res // 8
        layers: list[nn.Module] = []
        last = in_ch
        for i in range(n):
            out = ch * min(2**i, 8)
            k = 4 if i == 0 else 3
            layers += [nn.Conv2d(last, out, k, 2, padding=k // 2), nn.LeakyReLU(0.1)]
            last = out
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(last, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class PatchDiscriminator(nn.Module):
    """DFL's U-Net patch discriminator (GAN): strided encoder chosen to match `patch_size`, a
    centre logit, and a transposed-conv decoder with skips ending in a per-pixel logit."""

    def __init__(self, patch_size: int, base_ch: int = 16, max_ch: int = 512, in_ch: int = 3):
        super().__init__()
        layers = self.find_layers(patch_size)
        self.in_conv = nn.Conv2d(in_ch, base_ch, 1)
        self.enc, self.dec = nn.ModuleList(), nn.ModuleList()
        chans = [base_ch]
        for i, (k, s) in enumerate(layers):
            out = min(base_ch * 2 ** (i + 1), max_ch)
            self.enc.append(nn.Conv2d(chans[-1], out, k, s, padding=k // 2))
            chans.append(out)
        self.center = nn.Conv2d(chans[-1], 1, 1)
        for i in reversed(range(len(layers))):
            k, s = layers[i]
            self.dec.append(nn.ConvTranspose2d(chans[i + 1] * (1 if i == len(layers) - 1 else 2), chans[i], k, s,
                                               padding=k // 2, output_padding=s - 1))  # fmt: skip
        self.out = nn.Conv2d(chans[0] * 2, 1, 1)

    @staticmethod
    def find_layers(patch_size: int) -> list[tuple[int, int]]:
        """1-9 layers of 3x3 convs (first stride 2) whose receptive field is closest to the patch
        size: fewest layers, then most stride (DFL's search)."""
        best = None
        for n in range(1, 10):
            for mask in range(2 ** (n - 1)):
                strides = [2] + [2 if mask >> i & 1 else 1 for i in range(n - 1)]
                rf, jump = 1, 1
                for s in strides:
                    rf += 2 * jump
                    jump *= s
                score = (abs(rf - patch_size), n, -sum(strides))
                if best is None or score < best[0]:
                    best = (score, strides)
        return [(3, s) for s in best[1]]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.leaky_relu(self.in_conv(x), 0.2)
        skips = []
        for conv in self.enc:
            skips.append(x)
            x = F.leaky_relu(conv(x), 0.2)
        center = self.center(x)
        for i, deconv in enumerate(self.dec):
            x = F.leaky_relu(deconv(x), 0.2)
            skip = skips[-1 - i]
            x = torch.cat([x[:, :, : skip.shape[2], : skip.shape[3]], skip], 1)
        return center, self.out(x)
