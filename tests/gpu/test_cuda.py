"""The CUDA paths, for a GPU machine (`pytest -m gpu`; `bench/gpu_check.py` runs them).

Every test runs on FACELAB_TEST_DEVICE (default `cuda`) and skips with "no CUDA device" where
there is none. `bench/gpu_check.py --device cpu` runs the same tests on the CPU, so the tests
themselves are known to work before a GPU ever runs them (there, "device against CPU" compares
the CPU with itself; the autocast comparisons are real: bf16 on the CPU).

Tolerances: autocast outputs within 5e-2 (bf16) / 1e-2 (fp16) of fp32 at most and a fifth of
that on average (sigmoid outputs in [0, 1]; bf16 keeps 8 bits of mantissa); gradients with cosine similarity above 0.98 per model; device ops
against the CPU within 1e-4 (fp32 kernels differ in summation order only).
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch

from conftest import copy_workspace
from facelab.options import resolve_options
from facelab.training.options import TrainOptions

pytestmark = pytest.mark.gpu

DEVICE = os.environ.get("FACELAB_TEST_DEVICE", "cuda")
TINY = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 4, "seed": 5,
        "autosave_minutes": 600, "preview": False}  # fmt: skip
TOL = {torch.bfloat16: 5e-2, torch.float16: 1e-2}  # largest error; the mean must stay under a fifth of it


@pytest.fixture(scope="module")
def device() -> torch.device:
    dev = torch.device(DEVICE)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return dev


def _amp_dtypes(device: torch.device) -> list[torch.dtype]:
    if device.type == "cpu":
        return [torch.bfloat16]
    return ([torch.bfloat16] if torch.cuda.is_bf16_supported() else []) + [torch.float16]


def _models():
    from facelab.models.saehd import QUICK96, SAEHD, Architecture
    from facelab.models.xseg import create_xseg

    return {
        "saehd liae-udt 128": (lambda: SAEHD(Architecture(resolution=128, archi="liae-udt", ae_dims=64, e_dims=32, d_dims=32, d_mask_dims=16)), 128),
        "quick96": (lambda: SAEHD(QUICK96), 96),
        "xseg": (lambda: create_xseg(base=16, resolution=256), 256),
    }  # fmt: skip


def _outputs(model, x: torch.Tensor) -> list[torch.Tensor]:  # noqa: ANN001
    if hasattr(model, "swap"):
        out = model(x, x.flip(0))
        return [out["pred_src"], out["pred_dst"], out["pred_src_mask"], out["pred_dst_mask"]]
    return [torch.sigmoid(model(x))]


@pytest.mark.parametrize("name", list(_models()))
def test_forward_and_backward_under_each_autocast_mode_match_fp32(device, name):
    make, res = _models()[name]
    torch.manual_seed(0)
    model = make().to(device)
    x = torch.rand(2, 3, res, res, device=device)
    runs = {}
    for dtype in [None, *_amp_dtypes(device)]:
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            outs = _outputs(model, x)
        outs = [o.float() for o in outs]
        sum(o.square().mean() for o in outs).backward()
        grad = torch.cat([p.grad.flatten().float() for p in model.parameters() if p.grad is not None])
        runs[dtype] = ([o.detach() for o in outs], grad)
    ref_out, ref_grad = runs[None]
    for dtype in _amp_dtypes(device):
        outs, grad = runs[dtype]
        for a, b in zip(outs, ref_out):
            assert torch.isfinite(a).all()
            assert (a - b).abs().max().item() < TOL[dtype], f"{name} {dtype}"
            assert (a - b).abs().mean().item() < TOL[dtype] / 5, f"{name} {dtype}"
        cos = torch.nn.functional.cosine_similarity(grad, ref_grad, dim=0).item()
        assert cos > 0.98, f"{name} {dtype}: gradient cosine {cos:.4f}"


def test_device_augmentation_matches_the_cpu(device, monkeypatch, train_workspace, tmp_path):
    """The same random draws (made on the CPU for both), the same warped faces and masks."""
    from facelab.nn import augment as A
    from facelab.training.data import FacesetCache

    cache = FacesetCache.load_or_build(train_workspace.aligned_dir("dst"), tmp_path / "cache", "dst", 64, _full())
    batch = torch.from_numpy(np.array(cache.images[:4]))
    real_tn = A.truncated_normal
    results = []
    for dev in (torch.device("cpu"), device):
        g = torch.Generator().manual_seed(3)
        monkeypatch.setattr(A, "_uniform", lambda n, lo, hi, gen, d, g=g: (torch.rand(n, generator=g) * (hi - lo) + lo).to(d))
        monkeypatch.setattr(A, "truncated_normal", lambda shape, gen, d, g=g: real_tn(shape, g, torch.device("cpu")).to(d))
        out = A.augment(batch.to(dev), A.AugmentSettings(flip=False, random_warp=True), torch.Generator(device=dev))
        results.append([t.cpu() for t in (out.warped, out.target, out.mask, out.eyes_mouth)])
    for a, b in zip(*results):
        assert (a - b).abs().max().item() < 1e-4


@pytest.mark.parametrize("mode", ["rct", "lct", "mkl"])
def test_colour_transfers_on_the_device_match_the_cpu(device, mode):
    from facelab.nn.color import color_transfer

    g = torch.Generator().manual_seed(1)
    target, source = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g) * 0.5
    cpu = color_transfer(mode, target, source, torch.Generator())
    dev = color_transfer(mode, target.to(device), source.to(device), torch.Generator(device=device)).cpu()
    assert (cpu - dev).abs().max().item() < 1e-4
    assert (cpu - target).abs().mean().item() > 1e-2  # it did recolour


def test_the_uploaded_faceset_gives_the_memory_mapped_faces(device, train_workspace, tmp_path):
    from facelab.training.data import DeviceFaceset, FacesetCache

    cache = FacesetCache.load_or_build(train_workspace.aligned_dir("dst"), tmp_path / "cache", "dst", 64, _full())
    idx = torch.tensor([5, 0, 3, 3, 1])
    uploaded = DeviceFaceset(cache, device)
    mapped = DeviceFaceset(cache, device, max_gpu_bytes=0)
    assert device.type == "cpu" or uploaded.on_device is not None
    want = torch.from_numpy(np.ascontiguousarray(cache.images[idx.numpy()]))
    assert torch.equal(uploaded.gather(idx).cpu(), want) and torch.equal(mapped.gather(idx).cpu(), want)


def test_one_process_distributed_data_parallel_step_equals_a_plain_step(device):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from facelab.models.saehd import SAEHD, Architecture

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        arch = Architecture(resolution=64, archi="liae-ud", ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=16)
        plain = SAEHD(arch).to(device)
        wrapped_net = SAEHD(arch).to(device)
        wrapped_net.load_state_dict(plain.state_dict())
        wrapped = DistributedDataParallel(wrapped_net, device_ids=[device.index or 0] if device.type == "cuda" else None)
        x = torch.rand(2, 3, 64, 64, device=device)
        for net in (plain, wrapped):
            out = net(x, x)
            (out["pred_src"].mean() + out["pred_dst"].mean()).backward()
        for (name, a), b in zip(plain.named_parameters(), wrapped_net.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-7, msg=name)
    finally:
        dist.destroy_process_group()


def test_the_dfm_runs_through_onnxruntime_on_the_device(device, tmp_path):
    import onnxruntime as ort

    from facelab.models.dfm import OUTPUTS, DFMModel, DFMWrapper
    from facelab.models.saehd import SAEHD, Architecture
    from facelab.stages.export import export_onnx

    if device.type == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    torch.manual_seed(0)
    model = SAEHD(Architecture(resolution=64, archi="df-ud", ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=16)).eval()
    path = tmp_path / "m.dfm"
    export_onnx(DFMWrapper(model), 64, path, [OUTPUTS[2], OUTPUTS[0], OUTPUTS[1]], {"resolution": "64", "face_type": "f"})
    dfm = DFMModel(path, "f", str(device))
    assert (device.type == "cuda") == ("CUDAExecutionProvider" in dfm.providers)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        want = model.swap(x)
    for a, b in zip(dfm.swap(x), want):
        assert (a - b).abs().max().item() < 1e-3


def test_a_resumed_run_continues_where_it_stopped(device, train_workspace, tmp_path):
    from facelab.training.trainer import Trainer

    ws = copy_workspace(train_workspace, tmp_path / "ws")
    opts = resolve_options(TrainOptions, saved={**TINY, "device": str(device), "precision": "fp32"})
    first = Trainer(tmp_path / "m", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    for _ in range(3):
        first.step()
    first.save()
    straight = [first.step() for _ in range(3)]
    resumed = Trainer(tmp_path / "m", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    assert resumed.iteration == 3
    again = [resumed.step() for _ in range(3)]
    for a, b in zip(straight, again):
        np.testing.assert_allclose([b.src.item(), b.dst.item()], [a.src.item(), a.dst.item()], rtol=2e-3)


def test_fp16_training_steps_through_the_loss_scaler(device, train_workspace, tmp_path):
    from facelab.training.trainer import Trainer

    if device.type == "cpu":
        pytest.skip("fp16 autocast is a GPU mode (the CPU trains in fp32 or bf16)")
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    opts = resolve_options(TrainOptions, saved={**TINY, "device": str(device), "precision": "fp16"})
    trainer = Trainer(tmp_path / "m", opts, ws.aligned_dir("src"), ws.aligned_dir("dst"))
    assert trainer.amp_dtype == torch.float16 and trainer.scaler is not None
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    losses = [trainer.step() for _ in range(6)]
    assert all(np.isfinite([x.src.item(), x.dst.item()]).all() for x in losses)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())


def _full():
    from facelab.core.landmarks import FaceType

    return FaceType.FULL
