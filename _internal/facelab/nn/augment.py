"""Batched training augmentation on the training device (dfl-spec §9), replacing DFL's per-sample
numpy/OpenCV generator processes.

One random draw per sample drives input, target and masks alike, as in DFL:
- affine: rotation +-10 deg, scale in [1/1.15, 1.15], shift +-5 % (cv2.getRotationMatrix2D maths);
- random warp: a (w/cell + 1)^2 control grid, cell = w/2, w/4 or w/8, inner points moved by a
  normal truncated at 2.5 sigma scaled to 0.24 cell, bilinearly upsampled and cropped by cell/2
  (DFL's gen_warp_params, including its aliasing of the x and y offsets, see random_warp_maps);
  input only;
- flip with probability 0.4 when enabled; HSV jitter on the src input.
Images are sampled bicubic with replicated borders, masks bilinear with zero borders. The warp and
the affine are composed into one sampling grid (DFL resampled twice).

Everything takes and returns NCHW float32 in [0, 1] on the batch's device and uses the given
`torch.Generator`, so a seeded run repeats exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentSettings:
    rotation_deg: float = 10.0
    scale: float = 0.15
    shift: float = 0.05
    flip: bool = False
    flip_p: float = 0.4
    random_warp: bool = True
    hsv_power: float = 0.0
    warp_targets: bool = False  # XSeg: the target and masks follow the warp too


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=gen, device=device) * (hi - lo) + lo


def affine_from_params(angle_deg: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, res: int) -> torch.Tensor:
    """cv2.getRotationMatrix2D((res/2, res/2), angle, scale) plus (tx, ty) * res, batched (N x 2 x 3)."""
    angle = angle_deg * math.pi / 180
    a, b = scale * torch.cos(angle), scale * torch.sin(angle)
    c = res / 2
    row0 = torch.stack([a, b, (1 - a) * c - b * c + tx * res], 1)
    row1 = torch.stack([-b, a, b * c + (1 - a) * c + ty * res], 1)
    return torch.stack([row0, row1], 1)


def affine_matrices(n: int, res: int, s: AugmentSettings, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """N x 2 x 3 matrices in pixels mapping source -> output (cv2.warpAffine convention)."""
    angle = _uniform(n, -s.rotation_deg, s.rotation_deg, gen, device)
    scale = _uniform(n, 1 / (1 + s.scale), 1 + s.scale, gen, device)
    tx = _uniform(n, -s.shift, s.shift, gen, device)
    ty = _uniform(n, -s.shift, s.shift, gen, device)
    return affine_from_params(angle, scale, tx, ty, res)


def _pixel_grid(res: int, device: torch.device) -> torch.Tensor:
    """H x W x 3 homogeneous pixel-centre coordinates (x, y, 1), cv2 convention (centres at ints)."""
    ys, xs = torch.meshgrid(torch.arange(res, device=device, dtype=torch.float32),
                            torch.arange(res, device=device, dtype=torch.float32), indexing="ij")  # fmt: skip
    return torch.stack([xs, ys, torch.ones_like(xs)], -1)


def _to_normalised(p: torch.Tensor, res: int) -> torch.Tensor:
    """cv2 pixel coordinates -> grid_sample coordinates (align_corners=False)."""
    return (p + 0.5) / res * 2 - 1


def truncated_normal(shape: tuple, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """Normal truncated to +-2.5 sigma, divided by 2.5 (DFL's randomex.random_normal)."""
    x = torch.randn(shape, generator=gen, device=device)
    while True:
        bad = x.abs() > 2.5
        if not bad.any():
            return x / 2.5
        x = torch.where(bad, torch.randn(shape, generator=gen, device=device), x)


def random_warp_maps(n: int, res: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    """N x H x W x 2 source pixel coordinates (x, y) of DFL's random warp."""
    maps = torch.empty(n, res, res, 2, device=device)
    cells = torch.randint(0, 3, (n,), generator=gen, device=device).tolist()
    for choice in set(cells):
        idx = [i for i, c in enumerate(cells) if c == choice]
        cell = res // 2 ** (choice + 1)
        count = res // cell + 1
        line = torch.linspace(0, res, count, device=device)
        grid = torch.stack([line.expand(count, count), line[:, None].expand(count, count)], 0)  # 2 x c x c
        grid = grid.expand(len(idx), 2, count, count).clone()
        jitter = truncated_normal((len(idx), 2, count - 2, count - 2), gen, device) * (cell * 0.24)
        # DFL builds mapy as a *view* of mapx.T, so each map receives both offset grids:
        # x gets off_x + off_y^T and y its transpose. That is the warp DFL trains with (sqrt 2
        # stronger than intended, mirror-symmetric); kept so that warp strength matches DFL.
        both = jitter[:, 0] + jitter[:, 1].transpose(1, 2)
        grid[:, 0, 1:-1, 1:-1] += both
        grid[:, 1, 1:-1, 1:-1] += both.transpose(1, 2)
        up = F.interpolate(grid, size=(res + cell, res + cell), mode="bilinear", align_corners=False)
        half = cell // 2
        maps[idx] = up[:, :, half : half + res, half : half + res].permute(0, 2, 3, 1)
    return maps


@dataclass
class AugmentedBatch:
    warped: torch.Tensor  # N x 3 x R x R, the network input
    target: torch.Tensor  # N x 3 x R x R
    mask: torch.Tensor  # N x 1 x R x R, the full face mask
    eyes_mouth: torch.Tensor  # N x 1 x R x R


def augment(batch_u8: torch.Tensor, s: AugmentSettings, gen: torch.Generator) -> AugmentedBatch:
    """Augment a uint8 batch N x 5 x R x R (BGR, mask, eyes-mouth) already on the device."""
    n, _, res, _ = batch_u8.shape
    device = batch_u8.device
    x = batch_u8.float() / 255.0
    img, masks = x[:, :3], x[:, 3:]
    mats = affine_matrices(n, res, s, gen, device)
    full = torch.cat([mats, torch.tensor([0.0, 0.0, 1.0], device=device).expand(n, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # output pixel -> source pixel
    pix = _pixel_grid(res, device)
    src_xy = torch.einsum("hwk,njk->nhwj", pix, inv)  # N x H x W x 2, source pixels of each output pixel
    if s.flip:
        flips = torch.rand(n, generator=gen, device=device) < s.flip_p
        src_xy = torch.where(flips[:, None, None, None], src_xy.flip(2), src_xy)
    target_grid = _to_normalised(src_xy, res)
    target = F.grid_sample(img, target_grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)
    mask_t = F.grid_sample(masks, target_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if s.random_warp:
        maps = random_warp_maps(n, res, gen, device).permute(0, 3, 1, 2)  # N x 2 x H x W source pixels
        # the warp map evaluated where the affine looks: output -> affine -> warp -> image
        warp_xy = F.grid_sample(maps, target_grid, mode="bilinear", padding_mode="border", align_corners=False)
        warped_grid = _to_normalised(warp_xy.permute(0, 2, 3, 1), res)
        warped = F.grid_sample(img, warped_grid, mode="bicubic", padding_mode="border", align_corners=False).clamp(0, 1)
        if s.warp_targets:
            target = warped
            mask_t = F.grid_sample(masks, warped_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    else:
        warped = target
    if s.hsv_power > 0:
        warped = hsv_jitter(warped, s.hsv_power, gen)
    return AugmentedBatch(warped, target, mask_t[:, :1], mask_t[:, 1:2])


def hsv_jitter(bgr: torch.Tensor, power: float, gen: torch.Generator) -> torch.Tensor:
    """Random hue shift (+-180*power deg) and saturation/value shifts (+-power/2) per sample."""
    n, device = bgr.shape[0], bgr.device
    h, s, v = bgr_to_hsv(bgr)
    h = (h + _uniform(n, -power / 2, power / 2, gen, device)[:, None, None]) % 1.0
    s = (s + _uniform(n, -power / 2, power / 2, gen, device)[:, None, None]).clamp(0, 1)
    v = (v + _uniform(n, -power / 2, power / 2, gen, device)[:, None, None]).clamp(0, 1)
    return hsv_to_bgr(h, s, v)


def bgr_to_hsv(bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation and value in [0, 1]; N x H x W each."""
    b, g, r = bgr[:, 0], bgr[:, 1], bgr[:, 2]
    v, _ = bgr.max(1)
    mn, _ = bgr.min(1)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-8), torch.zeros_like(v))
    d = delta.clamp_min(1e-8)
    h = torch.where(v == r, (g - b) / d, torch.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return h, s, v


def hsv_to_bgr(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    h6 = h * 6
    k = lambda n: (n + h6) % 6  # noqa: E731
    f = lambda n: v - v * s * torch.clamp(torch.minimum(k(n), 4 - k(n)), 0, 1)  # noqa: E731
    return torch.stack([f(1), f(3), f(5)], 1)
