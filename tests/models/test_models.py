"""Every registered model and every archi variant: shapes, ranges, gradients; and the golden DFL
model's outputs reproduced from its own weight files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facelab.models.registry import create_model, list_models
from facelab.models.saehd import QUICK96, Architecture, SAEHD
from golden import golden

ARCHIS = [f"{k}{m}" for k in ("df", "liae") for m in ("", "-u", "-d", "-t", "-ud", "-udt", "-udtc")]


@pytest.mark.parametrize("archi", ARCHIS)
def test_every_archi_forward_backward_at_its_smallest_resolution(archi):
    res = 64 if "d" in archi.split("-")[-1] or "t" in archi else 64
    arch = Architecture(resolution=res, archi=archi, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=16)
    model = create_model("saehd", arch)
    x = torch.rand(2, 3, res, res)
    out = model(x, x)
    for key in ("pred_src", "pred_dst"):
        assert out[key].shape == (2, 3, res, res) and 0 < out[key].min() and out[key].max() < 1
        assert out[key + "_mask"].shape == (2, 1, res, res)
    (out["pred_src"].mean() + out["pred_dst_mask"].mean()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())
    face, face_mask, dst_mask = model.swap(x)
    assert face.shape == (2, 3, res, res) and face_mask.shape == dst_mask.shape == (2, 1, res, res)


def test_registry_lists_every_model_and_quick96_is_fixed():
    assert list_models() == ["quick96", "saehd", "xseg"]
    q = create_model("quick96")
    assert q.arch == QUICK96 and q(torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96))["pred_src"].shape == (1, 3, 96, 96)
    with pytest.raises(ValueError, match="multiple of 32"):
        SAEHD(Architecture(resolution=80, archi="liae-ud"))
    with pytest.raises(ValueError, match="modifiers"):
        SAEHD(Architecture(resolution=64, archi="liae-x"))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])  # channels-last: as training runs
def test_the_golden_dfl_model_gives_dfls_outputs(layout):
    from facelab.models.dfl_import import load_dfl_weights

    folder = golden("saehd_liae_ud_64")
    r = np.load(folder / "reference.npz")
    model = SAEHD(Architecture(resolution=64, archi="liae-ud", ae_dims=64, e_dims=32, d_dims=32, d_mask_dims=16)).eval()
    load_dfl_weights(model, folder, "golden_SAEHD", "liae")
    model = model.to(memory_format=layout)
    t = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).contiguous(memory_format=layout)  # noqa: E731
    back = lambda x: x.permute(0, 2, 3, 1).numpy()  # noqa: E731
    with torch.no_grad():
        face, src_m, dst_m = model.swap(t(r["merge_in"]))
        np.testing.assert_allclose(back(face), r["merge_batched_pred_face"], atol=1e-5)
        np.testing.assert_allclose(back(src_m), r["merge_batched_pred_src_dstm"], atol=1e-5)
        np.testing.assert_allclose(back(dst_m), r["merge_batched_pred_dst_dstm"], atol=1e-5)
        z_src, z_dst = model.codes(t(r["src_in"]), t(r["dst_in"]))
        for z, face_key, mask_key in ((z_src, "src_rec_face_logits", "src_rec_mask_logits"),
                                      (z_dst, "dst_rec_face_logits", "dst_rec_mask_logits")):  # fmt: skip
            f, m = model.decoder.logits(z)
            np.testing.assert_allclose(back(f), r[face_key], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(back(m), r[mask_key], rtol=1e-4, atol=1e-5)
