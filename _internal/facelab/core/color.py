"""Colour transfer and histogram matching for the merger (dfl-spec §9, §11), numpy, as DFL computes
them; checked against `dfl-golden/color.npz`. Images are H x W x 3 float32 BGR in [0, 1]; masks
H x W x 1 float32. The training twins (batched torch) are in `nn/color.py`.

Every function takes `(target, source, ...)` and recolours `target` (the swapped face) toward
`source` (the dst face): both H x W x 3 float32 BGR in [0, 1] (hist-match also takes 0-255), and
returns the recoloured target, H x W x 3 float32. Registry: `register_color(name)`,
`create_color(name)`, `list_colors()`; a registered transfer is called as
`create_color(name)(target, source, mask, rng=None)` with `mask` H x W x 1 float32 in [0, 1]
(the "-m" modes use only the pixels inside it) and returns values in [0, 1].
"""

from __future__ import annotations


import cv2
import numpy as np

from facelab.core.registry import Registry

COLORS = Registry("colour transfer")
register_color = COLORS.register
list_colors = COLORS.names
create_color = COLORS.get


def reinhard_color_transfer(target: np.ndarray, source: np.ndarray, target_mask=None, source_mask=None, mask_cutoff: float = 0.5) -> np.ndarray:  # noqa: ANN001
    """RCT in OpenCV's float Lab. Masked pixels are zeroed (not excluded) before the statistics, as DFL."""
    t_lab = cv2.cvtColor(np.ascontiguousarray(target, np.float32), cv2.COLOR_BGR2LAB)
    s_lab = cv2.cvtColor(np.ascontiguousarray(source, np.float32), cv2.COLOR_BGR2LAB)
    t_in, s_in = t_lab.copy(), s_lab.copy()
    if target_mask is not None:
        t_in[target_mask[..., 0] < mask_cutoff] = 0
    if source_mask is not None:
        s_in[source_mask[..., 0] < mask_cutoff] = 0
    tm, ts = t_in.reshape(-1, 3).mean(0), t_in.reshape(-1, 3).std(0)
    sm, ss = s_in.reshape(-1, 3).mean(0), s_in.reshape(-1, 3).std(0)
    out = (t_lab - tm) * (ss / np.where(ts == 0, 1, ts)) + sm
    out[..., 0] = np.clip(out[..., 0], 0, 100)
    out[..., 1:] = np.clip(out[..., 1:], -127, 127)
    return cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2BGR)


def linear_color_transfer(target: np.ndarray, source: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """LCT, 'pca' mode: covariance matching through eigen-decomposition square roots."""
    mu_t = target.mean((0, 1))
    t = (target - mu_t).transpose(2, 0, 1).reshape(target.shape[2], -1)
    ct = t @ t.T / t.shape[1] + eps * np.eye(t.shape[0])
    mu_s = source.mean((0, 1))
    s = (source - mu_s).transpose(2, 0, 1).reshape(source.shape[2], -1)
    cs = s @ s.T / s.shape[1] + eps * np.eye(s.shape[0])
    eva_t, eve_t = np.linalg.eigh(ct)
    qt = eve_t @ np.sqrt(np.diag(eva_t)) @ eve_t.T
    eva_s, eve_s = np.linalg.eigh(cs)
    qs = eve_s @ np.sqrt(np.diag(eva_s)) @ eve_s.T
    ts = qs @ np.linalg.inv(qt) @ t
    out = ts.reshape(target.transpose(2, 0, 1).shape).transpose(1, 2, 0) + mu_s
    return np.clip(out, 0, 1).astype(np.float32)


def color_transfer_mkl(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """The Monge-Kantorovich linear map of target's colours onto source's (DFL's exact formulation)."""
    eps = np.finfo(float).eps
    h, w, c = target.shape
    a0, a1 = target.reshape(-1, c).astype(np.float64), source.reshape(-1, c).astype(np.float64)
    a, b = np.cov(a0.T), np.cov(a1.T)
    da2, ua = np.linalg.eig(a)
    da = np.diag(np.sqrt(da2.clip(eps, None)))
    cmat = da @ ua.T @ b @ ua @ da
    dc2, uc = np.linalg.eig(cmat)
    dc = np.diag(np.sqrt(dc2.clip(eps, None)))
    da_inv = np.diag(1.0 / np.diag(da))
    t = ua @ da_inv @ uc @ dc @ uc.T @ da_inv @ ua.T
    out = (a0 - a0.mean(0)) @ t + a1.mean(0)
    return np.clip(out.reshape(h, w, c).astype(np.float32), 0, 1)


def _random_rotation(rng: np.random.Generator, n: int = 3) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, n)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def color_transfer_idt(target: np.ndarray, source: np.ndarray, bins: int = 256, n_rot: int = 20, rng: np.random.Generator | None = None) -> np.ndarray:
    """Iterative distribution transfer: n_rot random rotations of 1-D CDF matching, relaxation 1/n_rot."""
    rng = rng or np.random.default_rng()
    h, w, c = target.shape
    d0, d1 = target.reshape(-1, c).T.astype(np.float32), source.reshape(-1, c).T.astype(np.float32)
    for _ in range(n_rot):
        r = _random_rotation(rng, c).astype(np.float32)
        d0r, d1r = r @ d0, r @ d1
        d_r = np.empty_like(d0)
        for j in range(c):
            lo, hi = min(d0r[j].min(), d1r[j].min()), max(d0r[j].max(), d1r[j].max())
            p0, edges = np.histogram(d0r[j], bins=bins, range=[lo, hi])
            p1, _ = np.histogram(d1r[j], bins=bins, range=[lo, hi])
            cp0, cp1 = p0.cumsum().astype(np.float32), p1.cumsum().astype(np.float32)
            cp0 /= cp0[-1]
            cp1 /= cp1[-1]
            f = np.interp(cp0, cp1, edges[1:])
            d_r[j] = np.interp(d0r[j], edges[1:], f, left=0, right=bins)
        d0 = (1 / n_rot) * np.linalg.solve(r, d_r - d0r) + d0
    return np.clip(d0.T.reshape(h, w, c), 0, 1).astype(np.float32)


def color_transfer_sot(target: np.ndarray, source: np.ndarray, steps: int = 10, batch_size: int = 5, reg_sigma_xy: float = 16.0,
                       reg_sigma_v: float = 5.0, rng: np.random.Generator | None = None) -> np.ndarray:  # fmt: skip
    """Sliced optimal transport, then DFL's bilateral smoothing of the change."""
    rng = rng or np.random.default_rng()
    h, w, c = target.shape
    new = target.astype(np.float32).copy()
    for _ in range(steps):
        advect = np.zeros((h * w, c), np.float32)
        for _ in range(batch_size):
            d = rng.normal(size=c).astype(np.float32)
            d /= np.linalg.norm(d)
            ps, pt = (new * d).sum(-1).reshape(-1), (source * d).sum(-1).reshape(-1)
            ids, idt = np.argsort(ps), np.argsort(pt)
            advect[ids] += (pt[idt] - ps[ids])[:, None] * d
        new += advect.reshape(h, w, c) / batch_size
    if reg_sigma_xy:
        diff = new - target
        new = target + cv2.bilateralFilter(diff, 0, reg_sigma_v, reg_sigma_xy).reshape(h, w, c)
    return new


def color_transfer_mix(target: np.ndarray, source: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """LCT on lightness plus SOT on the colour channels, in 8-bit Lab (DFL's mix-m)."""
    s8 = np.clip(target * 255, 0, 255).astype(np.uint8)
    t8 = np.clip(source * 255, 0, 255).astype(np.uint8)
    s_lab, t_lab = cv2.cvtColor(s8, cv2.COLOR_BGR2LAB), cv2.cvtColor(t8, cv2.COLOR_BGR2LAB)
    light = linear_color_transfer(s_lab[..., 0:1].astype(np.float32) / 255, t_lab[..., 0:1].astype(np.float32) / 255)
    light = np.clip(light[..., 0] * 255, 0, 255).astype(np.uint8)
    s_lab[..., 0] = 100
    t_lab[..., 0] = 100
    s_bgr, t_bgr = cv2.cvtColor(s_lab, cv2.COLOR_LAB2BGR), cv2.cvtColor(t_lab, cv2.COLOR_LAB2BGR)
    mixed = np.clip(color_transfer_sot(s_bgr.astype(np.float32), t_bgr.astype(np.float32), rng=rng), 0, 255).astype(np.uint8)
    mixed = cv2.cvtColor(mixed, cv2.COLOR_BGR2LAB)
    mixed[..., 0] = light
    return (cv2.cvtColor(mixed, cv2.COLOR_LAB2BGR) / 255.0).astype(np.float32)


def channel_hist_match(target: np.ndarray, source: np.ndarray, threshold: float = 255) -> np.ndarray:
    oldshape = target.shape
    s_values, bin_idx, s_counts = np.unique(target.ravel(), return_inverse=True, return_counts=True)
    t_values, t_counts = np.unique(source.ravel(), return_counts=True)
    s_q = np.cumsum(s_counts).astype(np.float64)
    s_q = threshold * s_q / s_q[-1]
    t_q = np.cumsum(t_counts).astype(np.float64)
    t_q = 255 * t_q / t_q[-1]
    return np.interp(s_q, t_q, t_values)[bin_idx].reshape(oldshape)


def color_hist_match(target: np.ndarray, source: np.ndarray, threshold: float = 255) -> np.ndarray:
    """Per-channel histogram matching; `threshold` < 255 scales the source quantiles (DFL)."""
    chans = [channel_hist_match(target[..., i], source[..., i], threshold) for i in range(3)]
    return np.stack(chans + [target[..., i] for i in range(3, target.shape[2])], -1).astype(target.dtype)


def masked_hist_match_inputs(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The merger's hist-match inputs: outside the mask both images become white."""
    white = (1.0 - mask) * np.ones(target.shape[:2] + (1,), np.float32)
    a = target * mask + white
    a[a > 1.0] = 1.0
    b = source * mask + white
    b[a > 1.0] = 1.0  # DFL tests the first image here; kept
    return a, b


def avg_color(target: np.ndarray, source: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """faceswap's `avg-color`: shift each channel of `target` by the mean difference to `source`
    inside the mask (twice, as faceswap does), so the mean colours match there."""
    weights = np.ones(target.shape[:2] + (1,), np.float32) if mask is None else np.asarray(mask, np.float32).reshape(target.shape[:2] + (1,))
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    out = target.astype(np.float32).copy()
    for _ in range(2):
        out += ((source - out) * weights).sum((0, 1)) / weights.sum()
    return np.clip(out, 0, 1)


def color_balance(img: np.ndarray, brightness: float = 0, contrast: float = 0, temperature: float = 0, tint: float = 0) -> np.ndarray:
    """A manual colour balance, as a photo editor's (faceswap's manual balance, in Lab).

    Args:
        img: H x W x 3 BGR float32 in [0, 1].
        brightness: -100..100: lightness L* shifted by half of it (L* runs 0..100).
        contrast: -100..100: lightness spread around mid-grey scaled by 1 + contrast / 100.
        temperature: -100..100: b* shifted by half of it (- bluer, + warmer / yellower).
        tint: -100..100: a* shifted by half of it (- greener, + more magenta).
    Returns:
        H x W x 3 BGR float32 in [0, 1]; `img` itself when every value is 0.
    """
    if not (brightness or contrast or temperature or tint):
        return img
    lab = cv2.cvtColor(np.clip(img, 0, 1).astype(np.float32), cv2.COLOR_BGR2LAB)
    lab[..., 0] = np.clip((lab[..., 0] - 50) * (1 + contrast / 100) + 50 + brightness / 2, 0, 100)
    lab[..., 1] += tint / 2
    lab[..., 2] += temperature / 2
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), 0, 1)


def _binary(mask: np.ndarray) -> np.ndarray:
    return (mask >= 0.5).astype(np.float32)


# ---------------------------------------------------------------- the merger's modes

register_color("none")(lambda target, source, mask, rng=None: target)
register_color("rct")(lambda target, source, mask, rng=None: np.clip(reinhard_color_transfer(target, source, mask, mask), 0, 1))
register_color("lct")(lambda target, source, mask, rng=None: linear_color_transfer(target, source))
register_color("mkl")(lambda target, source, mask, rng=None: color_transfer_mkl(target, source))
register_color("mkl-m")(lambda target, source, mask, rng=None: color_transfer_mkl(target * _binary(mask), source * _binary(mask)))
register_color("idt")(lambda target, source, mask, rng=None: color_transfer_idt(target, source, rng=rng))
register_color("idt-m")(lambda target, source, mask, rng=None: color_transfer_idt(target * _binary(mask), source * _binary(mask), rng=rng))
register_color("sot-m")(lambda target, source, mask, rng=None: np.clip(color_transfer_sot(target * _binary(mask), source * _binary(mask), batch_size=30, rng=rng), 0, 1))
register_color("mix-m")(lambda target, source, mask, rng=None: color_transfer_mix(target * _binary(mask), source * _binary(mask), rng=rng))
register_color("avg-color")(lambda target, source, mask, rng=None: avg_color(target, source, mask))
