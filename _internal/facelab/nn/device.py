"""Device choice and mixed precision, one place for every torch stage."""

from __future__ import annotations

import torch

from facelab.errors import UserError


def resolve_device(name: str | None) -> torch.device:
    """auto -> cuda if available, else mps, else cpu; otherwise the named device."""
    if not name or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name} asked for, but this PyTorch sees no CUDA GPU (run doctor; setup --cuda on Windows)")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for training at `precision` on `device`; None = plain fp32.

    auto: bf16 on GPUs that have it (Ampere and newer), fp16 on Volta/Turing, fp32 on older GPUs
    (Pascal, e.g. a GTX 1080: no tensor cores, fp16 is no faster there) and on the CPU. The CPU
    uses bf16 only when asked (fast only with native bf16, see `cpu_has_native_bf16`)."""
    if device.type == "cpu" and precision == "bf16":
        return torch.bfloat16
    if device.type == "cpu" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "auto" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (7, 0):
        return None
    if precision == "bf16" or (device.type == "cuda" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX); elsewhere it is emulated and slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def inference_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for running a trained model (merge); None = plain fp32.

    auto: bf16 on a CPU with native bf16 (about 1.6x faster; a swapped face differs from fp32 by
    at most ~1/255, mean ~0.2/255), on a GPU as `autocast_dtype`; fp32 elsewhere."""
    if precision == "fp32" or device.type == "mps":
        return None
    if device.type == "cpu":
        if precision == "bf16" or (precision == "auto" and cpu_has_native_bf16()):
            return torch.bfloat16
        return None
    return autocast_dtype(device, precision)
