"""Device choice and mixed precision, one place for every torch stage."""

from __future__ import annotations

import torch

from facelab.errors import UserError


def resolve_device(name: str | None) -> torch.device:
    """auto -> cuda if available, else mps, else cpu; otherwise the named device."""
    if not name or name == "auto":
        if torch.cuda.is_available():
            if (why := missing_kernels(torch.device("cuda"))) is not None:
                raise UserError(why + "; or --device cpu")
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
    if (why := missing_kernels(device)) is not None:
        raise UserError(why)
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype for training at `precision` on `device`; None = plain fp32.

    auto: bf16 on GPUs that have it (Ampere and newer), fp16 on Volta/Turing, fp32 on older GPUs
    (Pascal, e.g. a GTX 1080: no tensor cores, fp16 is no faster there); on the CPU bf16 where it
    is native (`cpu_has_native_bf16`: bench/quality.py measured a better swap per minute there,
    1.5x the iterations), else fp32 (emulated bf16 is slower)."""
    if device.type == "cpu":
        native = precision == "auto" and cpu_has_native_bf16()
        return torch.bfloat16 if precision == "bf16" or native else None
    if precision == "fp32":
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


def prefers_channels_last(device: torch.device) -> bool:
    """Whether SAEHD's convolutions run faster channels-last here: cuDNN, and oneDNN on a CPU (a
    training step 1.05-1.25x faster, bf16 merging 1.15x; measured, issue 20). Not MPS."""
    return device.type in ("cuda", "cpu")


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


def describe(device: torch.device, dtype: torch.dtype | None = None) -> str:
    """One line of what a stage runs on: `device: cuda:0 (NVIDIA GeForce RTX 3060, 12.0 GiB,
    compute 8.6), bf16` or `device: cpu (AMD EPYC 9R14, 2 threads, native bf16), fp32`."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        p = torch.cuda.get_device_properties(index)
        what = f"cuda:{index} ({p.name}, {p.total_memory / 2**30:.1f} GiB, compute {p.major}.{p.minor})"
    elif device.type == "cpu":
        extra = ", native bf16" if cpu_has_native_bf16() else ""
        what = f"cpu ({cpu_name()}, {torch.get_num_threads()} threads{extra})"
    else:
        what = str(device)
    return f"device: {what}, {str(dtype).split('.')[-1] if dtype is not None else 'fp32'}"


def cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def missing_kernels(device: torch.device) -> str | None:
    """Why this PyTorch cannot run on this GPU (it was built without kernels for its compute
    capability, e.g. an RTX 50xx, sm_120, under a build that stops at sm_90); None when it can."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}"
    built = torch.cuda.get_arch_list()
    if not built or arch in built or any(a.startswith("compute_") and int(a[8:]) <= major * 10 + minor for a in built):
        return None
    return (f"this PyTorch has no kernels for {torch.cuda.get_device_name(device)} ({arch}; built for {', '.join(built)}): "
            "install a PyTorch build for this card (run setup again; RTX 50xx needs CUDA 12.8 or newer)")
