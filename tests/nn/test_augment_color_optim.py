"""Device augmentation, colour transfer and optimisers against DFL's numbers and hand references."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from facelab.nn import augment as A
from facelab.nn import color as C
from facelab.nn.optim import AdaBelief, RMSprop
from golden import golden


def nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous()


def test_affine_matrix_equals_dfls():
    g = np.load(golden("warp.npz"))
    m = A.affine_from_params(torch.tensor(g["rotation"]), torch.tensor(g["scale"]), torch.tensor(g["tx"]),
                             torch.tensor(g["ty"]), 128).numpy()  # fmt: skip
    np.testing.assert_allclose(m, g["rmat"], atol=1e-9)


def test_affine_sampling_matches_cv2_warp_affine():
    g = np.load(golden("warp.npz"))
    img = nchw(g["image"][None].repeat(6, 0))
    mats = A.affine_from_params(torch.tensor(g["rotation"]), torch.tensor(g["scale"]), torch.tensor(g["tx"]),
                                torch.tensor(g["ty"]), 128).float()  # fmt: skip
    full = torch.cat([mats, torch.tensor([0.0, 0.0, 1.0]).expand(6, 1, 3)], 1)
    src = torch.einsum("hwk,njk->nhwj", A._pixel_grid(128, img.device), torch.linalg.inv(full)[:, :2])
    out = torch.nn.functional.grid_sample(img, A._to_normalised(src, 128), mode="bicubic", padding_mode="border",
                                          align_corners=False).clamp(0, 1).permute(0, 2, 3, 1).numpy()  # fmt: skip
    diff = np.abs(out - g["transformed_image"])
    assert np.median(diff) < 0.01 and diff.mean() < 0.02  # cv2 and torch cubic kernels differ slightly


def test_random_warp_map_equals_dfls_for_the_same_offsets(monkeypatch):
    g = np.load(golden("warp.npz"))
    for seed in range(6):
        cell = int(g["cell_size"][seed])
        offsets = torch.from_numpy(np.stack([g[f"grid_offsets_x_seed{seed}"], g[f"grid_offsets_y_seed{seed}"]])[None])
        monkeypatch.setattr(A, "truncated_normal", lambda shape, gen, device: offsets / (cell * 0.24))
        monkeypatch.setattr(torch, "randint", lambda *a, **k: torch.tensor([{64: 0, 32: 1, 16: 2}[cell]]))
        maps = A.random_warp_maps(1, 128, torch.Generator(), torch.device("cpu"))[0].numpy()
        np.testing.assert_allclose(maps[..., 0], g["mapx"][seed], atol=1e-4)
        np.testing.assert_allclose(maps[..., 1], g["mapy"][seed], atol=1e-4)


def test_random_warp_statistics_match_dfls():
    g = np.load(golden("warp.npz"))
    gen = torch.Generator().manual_seed(0)
    maps = A.random_warp_maps(600, 128, gen, torch.device("cpu")).numpy()
    ys, xs = np.mgrid[0:128, 0:128]
    rms = np.sqrt(((maps[..., 0] - xs) ** 2 + (maps[..., 1] - ys) ** 2).mean(axis=(1, 2)))
    # cells of 16/32/64 px give distinct displacement sizes; compare the overall distribution
    theirs = g["stats_disp_std"]
    assert abs(np.mean(rms) - np.mean(theirs)) < 0.1 * np.mean(theirs), (np.mean(rms), np.mean(theirs))
    assert abs(np.percentile(rms, 90) - np.percentile(theirs, 90)) < 0.15 * np.percentile(theirs, 90)


def test_one_draw_moves_image_and_masks_together():
    img = np.zeros((1, 5, 64, 64), np.uint8)
    img[0, :, 20:40, 10:30] = 255  # a white square in every plane
    gen = torch.Generator().manual_seed(3)
    out = A.augment(torch.from_numpy(img), A.AugmentSettings(flip=True, flip_p=1.0, random_warp=True), gen)
    target_mask = (out.target[0, 0] > 0.5).numpy()
    assert ((out.mask[0, 0] > 0.5).numpy() == target_mask).mean() > 0.98
    assert target_mask[:, 32:].sum() > target_mask[:, :32].sum()  # flipped to the right half
    again = A.augment(torch.from_numpy(img), A.AugmentSettings(flip=True, flip_p=1.0), torch.Generator().manual_seed(3))
    assert torch.equal(again.warped, out.warped)  # seeded: repeats exactly


def test_hsv_round_trip_and_jitter():
    x = torch.rand(2, 3, 8, 8)
    np.testing.assert_allclose(A.hsv_to_bgr(*A.bgr_to_hsv(x)).numpy(), x.numpy(), atol=1e-5)
    ref = cv2.cvtColor((x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), cv2.COLOR_BGR2HSV)
    h, s, v = A.bgr_to_hsv((torch.from_numpy(ref).float() * 0 + x[0].permute(1, 2, 0) * 255).round().permute(2, 0, 1)[None] / 255)
    assert np.abs(v[0].numpy() * 255 - ref[..., 2]).max() <= 1


@pytest.mark.parametrize("mode,tol", [("lct", 1e-4), ("mkl", 3e-3), ("rct", 0.03)])
def test_deterministic_colour_transfers_match_dfl(mode, tol):
    g = np.load(golden("color.npz"))
    ours = C.color_transfer(mode, nchw(g["a"]), nchw(g["b"]), torch.Generator()).permute(0, 2, 3, 1).numpy()
    assert np.abs(ours - g[mode]).max() < tol
    assert np.abs(ours - g[mode]).mean() < tol / 10


@pytest.mark.parametrize("mode", ["idt", "sot"])
def test_stochastic_colour_transfers_match_dfls_statistics(mode):
    g = np.load(golden("color.npz"))
    ours = C.color_transfer(mode, nchw(g["a"]), nchw(g["b"]), torch.Generator().manual_seed(0)).permute(0, 2, 3, 1).numpy()
    stats = g[f"{mode}_stats"]  # seed x pair x [mean, std] x channel
    px = ours.reshape(3, -1, 3)
    assert np.abs(px.mean(1) - stats[:, :, 0].mean(0)).max() < 0.01
    assert np.abs(px.std(1) - stats[:, :, 1].mean(0)).max() < 0.01


def _reference_adabelief(w, grads, lr=5e-5, b1=0.9, b2=0.999):
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for g in grads:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * (g - m) ** 2
        w = w - lr * m / (np.sqrt(v) + 1e-6)
    return w


def test_adabelief_and_rmsprop_follow_dfls_rule():
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 5)).astype(np.float64)
    grads = [rng.normal(size=(4, 5)) for _ in range(3)]
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = AdaBelief([p], lr=5e-5)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    np.testing.assert_allclose(p.detach().numpy(), _reference_adabelief(w0, grads), rtol=0, atol=1e-12)
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = RMSprop([p], lr=1e-3)
    a, w = np.zeros_like(w0), w0.copy()
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
        a = 0.9 * a + 0.1 * g * g
        w = w - 1e-3 * g / (np.sqrt(a) + 1e-6)
    np.testing.assert_allclose(p.detach().numpy(), w, atol=1e-12)


def test_lr_dropout_keeps_about_30_percent_and_clipnorm_caps_the_step():
    p = torch.nn.Parameter(torch.zeros(10_000))
    opt = AdaBelief([p], lr=1.0, lr_dropout=0.3, generator=torch.Generator().manual_seed(0))
    p.grad = torch.ones(10_000)
    opt.step()
    assert 0.27 < (p.detach() != 0).float().mean() < 0.33
    q = torch.nn.Parameter(torch.zeros(4))
    opt = RMSprop([q], lr=1.0, clipnorm=1.0)
    q.grad = torch.full((4,), 100.0)
    opt.step()
    assert torch.allclose(q.grad.norm(), torch.tensor(1.0), atol=1e-4)  # clipped in place before the update


def test_training_avg_color_matches_the_mean_inside_each_mask_and_agrees_with_the_merger():
    from facelab.core.color import avg_color as merger_avg_color

    gen = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, 16, 16, generator=gen) * 0.5 + 0.25
    source = torch.rand(2, 3, 16, 16, generator=gen) * 0.4 + 0.1
    tmask = torch.zeros(2, 1, 16, 16)
    tmask[..., 4:12, 4:12] = 1
    smask = torch.zeros(2, 1, 16, 16)
    smask[..., 2:10, 6:14] = 1
    out = C.color_transfer("avg-color", target, source, gen, tmask, smask)
    inside = lambda x, m: (x * m).sum((2, 3)) / m.sum((2, 3))  # noqa: E731
    assert torch.allclose(inside(out, tmask), inside(source, smask), atol=1e-5)
    assert torch.allclose(out - target, (out - target)[..., :1, :1].expand_as(out), atol=1e-6)  # a shift per channel
    same = merger_avg_color(target[0].permute(1, 2, 0).numpy(), source[0].permute(1, 2, 0).numpy(), tmask[0, 0].numpy()[..., None])
    ours = C.color_transfer("avg-color", target[:1], source[:1], gen, tmask[:1], tmask[:1])
    assert np.abs(ours[0].permute(1, 2, 0).numpy() - same).max() < 1e-5


def test_lr_dropout_mask_keeps_the_rate_with_independent_neighbours():
    from facelab.nn.optim import keep_mask

    gen = torch.Generator().manual_seed(5)
    like = torch.empty(1001, 1003)  # not a multiple of 4
    m = keep_mask(like, 0.3, gen)
    assert m.shape == like.shape and m.dtype == torch.bool
    x = m.flatten().float()
    assert abs(x.mean().item() - 0.3) < 0.003
    for lag in (1, 2, 3, 4):  # the four draws of one 64-bit number are independent
        assert abs(torch.corrcoef(torch.stack([x[:-lag], x[lag:]]))[0, 1].item()) < 0.005
    assert not torch.equal(m, keep_mask(like, 0.3, gen))  # a new mask each step
    assert keep_mask(torch.empty(3), 1.0).all() and not keep_mask(torch.empty(1000), 0.0).any()


def test_optimiser_updates_channels_last_weights_as_nchw_ones_in_slices_of_their_own_layout():
    from facelab.nn import optim

    gen = torch.Generator().manual_seed(2)
    shape = (64, 1024, 9, 9)  # 5.3 M weights: more than one slice
    assert math.prod(shape) > optim.CHUNK
    w0 = torch.randn(shape, generator=gen)
    grads = [torch.randn(shape, generator=gen) for _ in range(2)]
    out = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        for cls in (AdaBelief, RMSprop):
            p = torch.nn.Parameter(w0.clone().to(memory_format=layout))
            opt = cls([p], lr=1e-3)
            for g in grads:
                p.grad = g.clone().to(memory_format=layout)
                opt.step()
            assert p.is_contiguous(memory_format=layout)
            assert max(b.numel() for b in opt._buffers.values()) <= optim.CHUNK  # updated in slices
            out[layout, cls] = p.detach()
    for cls in (AdaBelief, RMSprop):
        assert torch.equal(out[torch.contiguous_format, cls], out[torch.channels_last, cls])
        assert not torch.equal(out[torch.contiguous_format, cls], w0)
