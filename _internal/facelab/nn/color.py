"""Colour transfer on the training device, batched (dfl-spec §9 "Colour transfer"): recolour
`target` images toward `source` images, one pair per sample. NCHW BGR float in [0, 1].

- rct: Reinhard in OpenCV's float Lab (sRGB gamma, D65; L clipped 0-100, a/b +-127);
- lct: covariance matching through PCA square roots (eps 1e-5);
- mkl: the Monge-Kantorovich linear map;
- idt: 20 random rotations of 1-D distribution matching (quantiles), relaxation 1/20 per pass;
- sot: sliced optimal transport, 10 steps x 5 random directions.
Differences from DFL, on purpose: idt matches quantiles by sorting instead of 256-bin CDFs, and
sot skips DFL's bilateral filter on the result (training only needs the colour statistics).
The merger's numpy twins (with DFL's golden comparisons) live in core/color.py.
"""

from __future__ import annotations

import torch

_WHITE = (0.950456, 1.0, 1.088754)
_RGB2XYZ = [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]]


def bgr_to_lab(bgr: torch.Tensor) -> torch.Tensor:
    """OpenCV's COLOR_BGR2Lab for float images: L 0..100, a/b about -127..127."""
    rgb = bgr.flip(1).clamp(0, 1)
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_RGB2XYZ, device=bgr.device, dtype=bgr.dtype)
    xyz = torch.einsum("ij,njhw->nihw", m, lin) / torch.tensor(_WHITE, device=bgr.device, dtype=bgr.dtype).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12) ** (1 / 3), 7.787 * xyz + 16 / 116)
    y = xyz[:, 1]
    lum = torch.where(y > 0.008856, 116 * f[:, 1] - 16, 903.3 * y)
    return torch.stack([lum, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def lab_to_bgr(lab: torch.Tensor) -> torch.Tensor:
    lum, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    fy = (lum + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    inv = lambda f: torch.where(f > 0.206893, f**3, (f - 16 / 116) / 7.787)  # noqa: E731
    y = torch.where(lum > 7.9996, fy**3, lum / 903.3)
    white = torch.tensor(_WHITE, device=lab.device, dtype=lab.dtype).view(1, 3, 1, 1)
    xyz = torch.stack([inv(fx), y, inv(fz)], 1) * white
    m = torch.linalg.inv(torch.tensor(_RGB2XYZ, device=lab.device, dtype=torch.float64)).to(lab.dtype)
    lin = torch.einsum("ij,njhw->nihw", m, xyz).clamp(0, 1)
    rgb = torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp_min(1e-12) ** (1 / 2.4) - 0.055)
    return rgb.flip(1)


def rct(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    t, s = bgr_to_lab(target), bgr_to_lab(source)
    tm, ts = t.mean((2, 3), keepdim=True), t.std((2, 3), keepdim=True, unbiased=False)
    sm, ss = s.mean((2, 3), keepdim=True), s.std((2, 3), keepdim=True, unbiased=False)
    out = (t - tm) / ts.clamp_min(1e-6) * ss + sm
    out = torch.stack([out[:, 0].clamp(0, 100), out[:, 1].clamp(-127, 127), out[:, 2].clamp(-127, 127)], 1)
    return lab_to_bgr(out).clamp(0, 1)


def _pixels(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2).double()  # N x P x 3


def _sqrtm(c: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    vals = vals.clamp_min(1e-12)
    d = vals.rsqrt() if inverse else vals.sqrt()
    return vecs @ torch.diag_embed(d) @ vecs.transpose(-1, -2)


def _cov(p: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    d = p - mu
    return d.transpose(1, 2) @ d / p.shape[1]


def _linear(target: torch.Tensor, source: torch.Tensor, mkl: bool) -> torch.Tensor:
    t, s = _pixels(target), _pixels(source)
    mt, ms = t.mean(1, keepdim=True), s.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=t.dtype, device=t.device) * 1e-5
    ct, cs = _cov(t, mt) + eye, _cov(s, ms) + eye
    if mkl:
        ct_h, ct_ih = _sqrtm(ct), _sqrtm(ct, inverse=True)
        a = ct_ih @ _sqrtm(ct_h @ cs @ ct_h) @ ct_ih
    else:
        a = _sqrtm(cs) @ _sqrtm(ct, inverse=True)
    out = (t - mt) @ a.transpose(1, 2) + ms
    return out.transpose(1, 2).reshape(target.shape).to(target.dtype).clamp(0, 1)


def lct(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return _linear(target, source, mkl=False)


def mkl(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return _linear(target, source, mkl=True)


def _random_rotations(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=gen, device=device, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r, dim1=1, dim2=2)).unsqueeze(1)


def _match_sorted(proj_t: torch.Tensor, proj_s: torch.Tensor) -> torch.Tensor:
    """Per sample and axis, the source quantile of each target value (1-D optimal transport)."""
    order = proj_t.argsort(1)
    s_sorted = proj_s.sort(1).values
    if s_sorted.shape[1] != proj_t.shape[1]:
        idx = torch.linspace(0, s_sorted.shape[1] - 1, proj_t.shape[1], device=proj_t.device).round().long()
        s_sorted = s_sorted[:, idx]
    matched = torch.empty_like(proj_t)
    matched.scatter_(1, order, s_sorted)
    return matched


def idt(target: torch.Tensor, source: torch.Tensor, gen: torch.Generator, n_rot: int = 20) -> torch.Tensor:
    t, s = _pixels(target), _pixels(source)
    for _ in range(n_rot):
        rot = _random_rotations(t.shape[0], gen, t.device)  # N x 3 x 3
        pt, ps = t @ rot, s @ rot
        t = t + ((_match_sorted(pt, ps) - pt) @ rot.transpose(1, 2)) / n_rot  # relaxation 1/n_rot, as DFL
    return t.transpose(1, 2).reshape(target.shape).to(target.dtype).clamp(0, 1)


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian, radius 1.5 sigma, reflected borders (cv2.bilateralFilter's spatial part)."""
    import torch.nn.functional as F

    radius = max(1, round(sigma * 1.5))
    r = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(r**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def sot(target: torch.Tensor, source: torch.Tensor, gen: torch.Generator, steps: int = 10, directions: int = 5,
        reg_sigma_xy: float = 16.0) -> torch.Tensor:  # fmt: skip
    t0 = _pixels(target)
    t, s = t0.clone(), _pixels(source)
    for _ in range(steps):
        d = torch.randn(t.shape[0], 3, directions, generator=gen, device=t.device, dtype=t.dtype)
        d = d / d.norm(dim=1, keepdim=True)
        pt, ps = t @ d, s @ d
        advect = _match_sorted(pt, ps) - pt  # N x P x D
        t = t + (advect @ d.transpose(1, 2)) / directions
    diff = (t - t0).transpose(1, 2).reshape(target.shape)
    if reg_sigma_xy:
        # DFL smooths the transport with cv2.bilateralFilter(diff, 0, 5, 16): with a colour sigma of 5
        # on differences within +-1 the range weight is ~1, i.e. a spatial Gaussian
        diff = _smooth(diff, reg_sigma_xy)
    return (target.double() + diff).to(target.dtype).clamp(0, 1)


def avg_color(target: torch.Tensor, source: torch.Tensor, target_mask: torch.Tensor | None = None,
              source_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """faceswap's avg-color: each channel shifted so that the mean inside the target's mask is the
    mean inside the source's (masks N x 1 x H x W in [0, 1]; None: the whole face)."""

    def mean(x: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        m = torch.ones_like(x[:, :1]) if m is None else m
        return (x * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1e-6)

    return (target + (mean(source, source_mask) - mean(target, target_mask))[..., None, None]).clamp(0, 1)


def color_transfer(mode: str, target: torch.Tensor, source: torch.Tensor, gen: torch.Generator,
                   target_mask: torch.Tensor | None = None, source_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`target` recoloured toward `source` (both N x 3 x H x W BGR in [0, 1]; the masks, N x 1 x H x W,
    are used by avg-color only)."""
    if mode == "avg-color":
        return avg_color(target, source, target_mask, source_mask)
    if mode == "rct":
        return rct(target, source)
    if mode == "lct":
        return lct(target, source)
    if mode == "mkl":
        return mkl(target, source)
    if mode == "idt":
        return idt(target, source, gen)
    if mode == "sot":
        return sot(target, source, gen)
    raise ValueError(f"unknown colour transfer {mode!r}")
