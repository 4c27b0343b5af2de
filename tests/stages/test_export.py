"""ONNX / DeepFaceLive .dfm export: exact names and shapes, metadata, onnxruntime = PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import torch

from conftest import TINY, copy_workspace


def test_dfm_export_has_deepfacelives_contract_and_matches_pytorch(train_workspace, tmp_path, script):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert script("6_train_SAEHD", *args, *TINY, "--target-iter", "2").returncode == 0
    proc = script("6_export_SAEHD_onnx", *args)
    assert proc.returncode == 0, proc.stderr
    path = ws.model_dir / "new_SAEHD.dfm"
    model = onnx.load(str(path))
    dims = lambda v: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in model.graph.input] == [("in_face:0", ["batch", 64, 64, 3])]
    assert [(o.name, dims(o)) for o in model.graph.output] == [
        ("out_face_mask:0", ["batch", 64, 64, 1]), ("out_celeb_face:0", ["batch", 64, 64, 3]),
        ("out_celeb_face_mask:0", ["batch", 64, 64, 1]),
    ]  # fmt: skip
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["face_type"] == "full_face" and meta["resolution"] == "64" and meta["synthetic"] == "true"

    from facelab.models import store

    net = store.load(ws, "saehd", device="cpu").net
    face = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"in_face:0": face})
    with torch.no_grad():
        swap, swap_mask, dst_mask = net.swap(torch.from_numpy(face).permute(0, 3, 1, 2))
    for got, want in zip(out, (dst_mask, swap, swap_mask)):
        assert np.abs(got - want.permute(0, 2, 3, 1).numpy()).max() < 1e-4


def test_xseg_export(train_workspace, tmp_path, script):
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1] / "training"))
    from test_xseg import _label

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    _label(ws.aligned_dir("src"), occluder=False)
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert script("5_xseg_train", *args, "--resolution", "64", "--base", "4", "--target-iter", "2", "--no-preview").returncode == 0
    proc = script("6_export_SAEHD_onnx", *args, "--model", "xseg")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(str(ws.model_dir / "XSeg" / "XSeg_model.onnx"))
    assert [i.name for i in model.graph.input] == ["in_face:0"] and [o.name for o in model.graph.output] == ["out_mask:0"]
