"""The merger's colour transfers (core/color.py, numpy) against DeepFaceLab's own outputs (color.npz)."""

from __future__ import annotations

import numpy as np
import pytest

from facelab.core import color as C
from golden import golden

DETERMINISTIC = {
    "rct": lambda a, b, m: C.reinhard_color_transfer(a, b),
    "rct_masked": lambda a, b, m: C.reinhard_color_transfer(a, b, m, m),  # as the merger calls it
    "lct": lambda a, b, m: C.linear_color_transfer(a, b),
    "mkl": lambda a, b, m: C.color_transfer_mkl(a, b),
    "mkl_m": lambda a, b, m: C.color_transfer_mkl(a * m, b * m),
    "hist_match_255": lambda a, b, m: C.color_hist_match(a, b, 255),
    "hist_match_masked_238": lambda a, b, m: C.color_hist_match(*C.masked_hist_match_inputs(a, b, m), 238),
}


@pytest.mark.parametrize("key", DETERMINISTIC)
def test_deterministic_transfers_equal_dfls(key):
    g = np.load(golden("color.npz"))
    for i in range(3):
        ours = DETERMINISTIC[key](g["a"][i], g["b"][i], g["mask"][i])
        assert np.abs(ours - g[key][i]).max() < 5e-5, f"{key} pair {i}"


@pytest.mark.parametrize("mode,key", [("idt", "idt"), ("idt-m", "idt_m"), ("sot-m", "sot_m"), ("mix-m", "mix_m")])
def test_random_transfers_have_dfls_statistics(mode, key):
    """DFL draws from numpy's global RNG; ours from a Generator, so the per-channel mean and std are compared."""
    g = np.load(golden("color.npz"))
    fn = C.create_color(mode)
    runs = np.stack([[fn(g["a"][i], g["b"][i], g["mask"][i], rng=np.random.default_rng(10 * s + i)) for i in range(3)] for s in range(3)])
    px = runs.reshape(3, 3, -1, 3)  # seed x pair x pixel x channel
    stats = g[f"{key}_stats"]  # seed x pair x [mean, std] x channel
    assert np.abs(px.mean(2).mean(0) - stats[:, :, 0].mean(0)).max() < 0.01
    assert np.abs(px.std(2).mean(0) - stats[:, :, 1].mean(0)).max() < 0.015
    moved = np.abs(px.mean(2).mean(0) - g["a"].reshape(3, -1, 3).mean(1)).max()
    assert moved > 0.02, "the transfer left the colours where they were"


def test_merger_registry_has_every_dfl_mode():
    assert set(C.list_colors()) == {"none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m", "avg-color"}


def test_avg_color_matches_the_mean_colour_inside_the_mask_only():
    rng = np.random.default_rng(0)
    target = rng.uniform(0.2, 0.5, (64, 64, 3)).astype(np.float32)
    source = rng.uniform(0.4, 0.8, (64, 64, 3)).astype(np.float32)
    mask = np.zeros((64, 64, 1), np.float32)
    mask[16:48, 16:48] = 1
    source[mask[..., 0] == 0] = 0  # outside the mask the source is black: it must not count
    out = C.create_color("avg-color")(target, source, mask)
    inside = mask[..., 0] == 1
    assert np.allclose(out[inside].mean(0), source[inside].mean(0), atol=1e-5)
    assert np.allclose(out - target, (out - target)[0, 0], atol=1e-6)  # one shift per channel, no other change


def test_color_balance_moves_lightness_contrast_and_colour_in_lab():
    import cv2

    rng = np.random.default_rng(3)
    img = np.clip(rng.normal(0.5, 0.15, (32, 32, 3)), 0, 1).astype(np.float32)
    lab = lambda x: cv2.cvtColor(x, cv2.COLOR_BGR2LAB)  # noqa: E731
    assert C.color_balance(img) is img
    base = lab(img)
    brighter = lab(C.color_balance(img, brightness=20))
    assert abs((brighter[..., 0] - base[..., 0]).mean() - 10) < 0.5  # half the value, in L* units
    assert np.abs(brighter[..., 1:] - base[..., 1:]).mean() < 0.5  # colour unchanged
    assert lab(C.color_balance(img, contrast=50))[..., 0].std() > 1.4 * base[..., 0].std()
    assert lab(C.color_balance(img, contrast=-50))[..., 0].std() < 0.6 * base[..., 0].std()
    warm, green = C.color_balance(img, temperature=40), C.color_balance(img, tint=-40)
    assert (lab(warm)[..., 2] - base[..., 2]).mean() > 15 and warm[..., 0].mean() < img[..., 0].mean()  # yellower, less blue
    assert (lab(green)[..., 1] - base[..., 1]).mean() < -15 and green[..., 1].mean() > img[..., 1].mean()  # greener
    assert all(0 <= x.min() and x.max() <= 1 for x in (warm, green))
