"""Which precision runs where (nn/device.py): the rules, with the GPU's answers stood in for."""

from __future__ import annotations

import pytest
import torch

from facelab.nn import device as D

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.mark.parametrize("capability, has_bf16, want", [
    ((6, 1), False, None),  # Pascal (GTX 1080): fp32, fp16 would be no faster
    ((7, 5), False, torch.float16),  # Turing: fp16 tensor cores
    ((8, 6), True, torch.bfloat16),  # Ampere and newer
])  # fmt: skip
def test_auto_precision_on_gpus(monkeypatch, capability, has_bf16, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: has_bf16)
    assert D.autocast_dtype(CUDA, "auto") == want
    assert D.inference_dtype(CUDA, "auto") == want  # merging follows the same rule on a GPU
    assert D.autocast_dtype(CUDA, "fp16") == torch.float16 and D.autocast_dtype(CUDA, "fp32") is None  # asked: as asked


@pytest.mark.parametrize("native", [True, False])
def test_cpu_trains_and_merges_in_bf16_where_native_else_fp32(monkeypatch, native):
    monkeypatch.setattr(D, "cpu_has_native_bf16", lambda: native)
    assert D.autocast_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert D.autocast_dtype(CPU, "bf16") == torch.bfloat16 and D.autocast_dtype(CPU, "fp32") is None
    assert D.inference_dtype(CPU, "auto") == (torch.bfloat16 if native else None)
    assert D.inference_dtype(CPU, "fp32") is None and D.inference_dtype(CPU, "bf16") == torch.bfloat16
    assert D.inference_dtype(MPS, "auto") is None

