"""Every training feature runs a real step on real faces: finite losses, weights that move."""

from __future__ import annotations

import pytest
import torch

from conftest import copy_workspace
from facelab.options import resolve_options
from facelab.training.options import TrainOptions
from facelab.training.trainer import Trainer

BASE = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 2, "seed": 3}
FEATURES = {
    "df-gan-trueface-styles": {"archi": "df-ud", "gan_power": 0.1, "true_face_power": 0.01, "face_style_power": 1.0,
                               "bg_style_power": 1.0},
    "liae-eyes-uniform-blur-clip-lrdrop": {"eyes_mouth_prio": True, "uniform_yaw": True, "blur_out_mask": True,
                                           "clipgrad": True, "lr_dropout": "y", "random_hsv_power": 0.1},
    "rmsprop-no-warp-flips-wf": {"adabelief": False, "random_warp": False, "random_src_flip": True, "face_type": "wf",
                                 "masked_training": False},
    **{f"ct-{m}": {"ct_mode": m} for m in ("rct", "lct", "mkl", "idt", "sot", "avg-color")},
}


@pytest.fixture(scope="module")
def ws(train_workspace, tmp_path_factory):
    return copy_workspace(train_workspace, tmp_path_factory.mktemp("features") / "ws")


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_feature_trains(ws, tmp_path, name):
    opts = resolve_options(TrainOptions, saved={**BASE, **FEATURES[name]})
    trainer = Trainer(tmp_path / f"{name}_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    for _ in range(3):
        losses = trainer.step()
    assert torch.isfinite(losses.src) and torch.isfinite(losses.dst)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert trainer.save().name == "00000003"


def test_quick96_and_pretrain(ws, tmp_path):
    q = Trainer(tmp_path / "q_Quick96", resolve_options(TrainOptions, saved={"model": "quick96", "seed": 1}),
                ws.aligned_dir("src"), ws.aligned_dir("dst"))  # fmt: skip
    for _ in range(3):  # the third step re-trains the previous batch unwarped
        losses = q.step()
    assert q.res == 96 and torch.isfinite(losses.src)
    opts = resolve_options(TrainOptions, saved={**BASE, "pretrain": True, "pretraining_data_dir": str(ws.aligned_dir("dst"))})
    p = Trainer(tmp_path / "p_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    p.step()
    p.save()
    # turning pretraining off starts the iteration count again and re-initialises the inter layers
    after = Trainer(tmp_path / "p_SAEHD", resolve_options(TrainOptions, saved=BASE), ws.aligned_dir("src"), ws.aligned_dir("dst"))
    assert after.iteration == 0


def test_a_cpu_trains_channels_last_and_uncompiled_with_one_warning(ws, tmp_path, caplog):
    opts = resolve_options(TrainOptions, saved={**BASE, "compile": True, "device": "cpu"})
    with caplog.at_level("WARNING"):
        trainer = Trainer(tmp_path / "c_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
        trainer.step()
    assert trainer._forward is trainer.model  # not wrapped by torch.compile
    assert sum("--compile is not used on a CPU" in r.getMessage() for r in caplog.records) == 1
    conv = trainer.model.encoder.down1.downs[0].conv1.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    slot = trainer.optimizer.state[conv]["m"]
    assert slot.stride() == conv.stride()  # the optimiser's moments in the weight's layout
    trainer.save()
    resumed = Trainer(tmp_path / "c_SAEHD", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    conv = resumed.model.encoder.down1.downs[0].conv1.weight
    assert resumed.iteration == 1 and resumed.optimizer.state[conv]["m"].stride() == conv.stride()  # saved contiguous
