"""What every bench result says about the machine it ran on, and the machine's own limits.

`machine()`: the CPU model, its cores and the instruction-set flags that decide PyTorch's kernels
(AVX2, AVX-512, AVX512-BF16, AMX), so that no figure is ever read without its machine.
`conv_mix_limit()`: the GFLOP/s this machine reaches on exactly the convolutions a model's step
runs (each shape timed alone in its faster memory layout, weighted by its FLOPs; forward alone
and forward + backward), in fp32 and bf16, plus a large matmul: the "limit" a training or merge
figure is a share of (issue 20).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import torch

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def machine() -> dict:
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    from facelab.nn.device import cpu_has_native_bf16, cpu_name

    return {"cpu_model": cpu_name(), "cpu_cores": os.cpu_count(), "cpu_flags": [f for f in FLAGS if f in flags],
            "native_bf16": cpu_has_native_bf16(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__}  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], device: torch.device, reps: int = 3) -> float:
    """Best of `reps` timings after one warm-up call."""
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def conv_shapes(model: torch.nn.Module, *inputs: torch.Tensor) -> list[tuple[torch.nn.Conv2d, tuple[int, ...]]]:
    """(conv module, input shape) of every Conv2d call in one forward pass of `model`."""
    seen: list[tuple[torch.nn.Conv2d, tuple[int, ...]]] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: seen.append((mod, tuple(args[0].shape))))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return seen


def conv_flops(conv: torch.nn.Conv2d, shape: tuple[int, ...]) -> float:
    n, c, h, w = shape
    kh, kw = conv.kernel_size
    oh = (h + 2 * conv.padding[0] - kh) // conv.stride[0] + 1
    ow = (w + 2 * conv.padding[1] - kw) // conv.stride[1] + 1
    return 2.0 * n * oh * ow * conv.out_channels * c // conv.groups * kh * kw


def _fwd_bwd(layer: torch.nn.Conv2d, x: torch.Tensor) -> None:
    y = layer(x)
    y.backward(torch.ones_like(y))


def conv_mix_limit(calls: list[tuple[torch.nn.Conv2d, tuple[int, ...]]], device: torch.device) -> dict:
    """GFLOP/s of this conv mix in fp32 and bf16 (each distinct shape timed alone in the faster of
    the two memory layouts, NCHW or channels-last, weighted by its FLOPs), and of a 2048^3 matmul.

    `conv_mix_gflop_per_s`: the forward convolutions. `conv_mix_train_gflop_per_s`: forward and
    backward (input and weight gradients, counted as 3x the forward FLOPs, as a training step's
    figure is): the kernels a training step cannot run faster than, on this machine."""
    distinct: dict[tuple, tuple[torch.nn.Conv2d, tuple[int, ...], int]] = {}
    for conv, shape in calls:
        key = (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, shape)
        prev = distinct.get(key)
        distinct[key] = (conv, shape, (prev[2] if prev else 0) + 1)
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        flops = fwd_s = train_s = 0.0
        for conv, shape, count in distinct.values():
            fwd = train = float("inf")
            for layout in (torch.contiguous_format, torch.channels_last):  # the faster of the two
                x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=layout)
                layer = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
                layer = layer.to(device, dtype, memory_format=layout)
                with torch.no_grad():
                    fwd = min(fwd, _seconds(lambda layer=layer, x=x: layer(x), device))
                x.requires_grad_(True)
                train = min(train, _seconds(lambda layer=layer, x=x: _fwd_bwd(layer, x), device))
            flops += conv_flops(conv, shape) * count
            fwd_s += fwd * count
            train_s += train * count
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        mm = _seconds(lambda a=a: a @ a, device)
        out[name] = {"conv_mix_gflop_per_s": round(flops / fwd_s / 1e9, 1),
                     "conv_mix_train_gflop_per_s": round(3 * flops / train_s / 1e9, 1),
                     "matmul_gflop_per_s": round(2 * 2048**3 / mm / 1e9, 1)}  # fmt: skip
    out["conv_shapes"] = len(distinct)
    return out
