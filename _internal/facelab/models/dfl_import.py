"""Read DeepFaceLab SAEHD / Quick96 weight files into our networks (no TensorFlow involved).

DFL's `<name>_SAEHD_<part>.npy` files are pickles of `{"<layer path>/<var>:0": ndarray}` (spec §10),
read here through the allow-list unpickler. Layouts: conv (kh, kw, in, out) -> (out, in, kh, kw),
dense (in, out) -> (out, in); list layers `downs_0` -> `downs.0`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.errors import UserError
from facelab.io.faceimage import FaceMetaError, dfl_weights_cap, read_dfl_arrays

PARTS = {"df": ("encoder", "inter", "decoder_src", "decoder_dst"), "liae": ("encoder", "inter_AB", "inter_B", "decoder")}


def dfl_key_to_ours(part: str, key: str) -> str:
    key = key.split(":")[0]
    key = re.sub(r"/(\w+?)_(\d+)(?=/)", r"/\1.\2", "/" + key)[1:]
    return f"{part}." + key.replace("/", ".")


def _ours(value: np.ndarray) -> np.ndarray:
    if value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    return value.T if value.ndim == 2 else value


def read_dfl_part(path: Path, part: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One `<prefix>_<part>.npy`, checked against `state` (our network's tensors) name by name and
    shape by shape before any value is converted."""
    mine = [t for k, t in state.items() if k.startswith(part + ".")]
    try:
        raw = read_dfl_arrays(path, dfl_weights_cap(sum(t.numel() for t in mine)))
    except FaceMetaError as exc:
        raise UserError(str(exc)) from None
    arrays = {dfl_key_to_ours(part, key): _ours(value) for key, value in raw.items()}
    for key, value in arrays.items():
        if key not in state:
            raise UserError(f"{path}: {key} is not part of this architecture: the DFL model was made with other options")
        if tuple(value.shape) != tuple(state[key].shape):
            raise UserError(f"{path}: {key} is {tuple(value.shape)} in the DFL model, {tuple(state[key].shape)} in this architecture")
    return {k: torch.from_numpy(np.ascontiguousarray(v, np.float32)) for k, v in arrays.items()}


def load_dfl_weights(model: nn.Module, folder: Path, prefix: str, kind: str) -> None:
    """Load `<folder>/<prefix>_<part>.npy` for every part of `kind` (df / liae) into `model`."""
    state = model.state_dict()
    weights: dict[str, torch.Tensor] = {}
    for part in PARTS[kind]:
        path = Path(folder) / f"{prefix}_{part}.npy"
        if not path.exists():
            raise UserError(f"{path} is missing: a DFL {kind} model needs {', '.join(PARTS[kind])}")
        weights.update(read_dfl_part(path, part, state))
    missing = [k for k in state if k not in weights]
    if missing:
        raise UserError(
            f"the DFL model in {folder} does not match this architecture ({len(missing)} tensors missing, e.g. {missing[0]})"
        )
    with torch.no_grad():
        for key, target in state.items():
            target.copy_(weights[key])


# ---------------------------------------------------------------- XSeg


def _xseg_block(name: str) -> str | None:
    """Our module path for a DFL XSeg block name (`conv31`, `uconv22`, `up5`, `dense1`, ...)."""
    if name in ("dense1", "dense2", "out_conv"):
        return name
    m = re.fullmatch(r"(u?)conv(\d)(\d)", name)
    if m:
        level, k = int(m.group(2)), int(m.group(3))
        if m.group(1):  # the decoder runs from level 5 up: uconv53 is dec.0.0, uconv51 dec.0.2
            depth = 3 if level >= 3 else 2
            return f"dec.{5 - level}.{depth - k}"
        return f"enc.{level}.{k - 1}"
    m = re.fullmatch(r"up(\d)", name)
    return f"ups.{5 - int(m.group(1))}" if m else None


def dfl_xseg_tensors(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """DFL's XSeg arrays (`conv01/conv/weight:0`, ...) as our XSegNet's state-dict entries, in our
    layouts: conv (kh, kw, in, out) and transposed conv (kh, kw, out, in) -> (out|in, in|out, kh, kw),
    dense (in, out) -> (out, in); FRN/TLU vectors -> (1, C, 1, 1), FRN's scalar eps spread over C."""
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        parts = key.split(":")[0].split("/")
        block = _xseg_block(parts[0])
        if block is None or len(parts) not in (2, 3):
            raise UserError(f"{key}: not a layer of DFL's XSeg network")
        name = f"{block}.{'.'.join(parts[1:])}"
        if value.ndim == 4:
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2:
            value = value.T
        elif parts[-1] in ("weight", "bias", "eps", "tau") and parts[-2] in ("frn", "tlu"):
            value = value.reshape(1, -1, 1, 1)
        out[name] = value
    for key in [k for k in out if k.endswith("frn.eps")]:  # DFL keeps one eps per layer
        width = out[key.replace("eps", "weight")].shape[1]
        out[key] = np.broadcast_to(out[key], (1, width, 1, 1)).copy()
    return out


def load_dfl_xseg(model: nn.Module, path: Path) -> None:
    """DFL's `XSeg_256.npy` into our XSegNet, every name and shape checked first."""
    state = model.state_dict()
    try:
        raw = read_dfl_arrays(path, dfl_weights_cap(sum(t.numel() for t in state.values())))
    except FaceMetaError as exc:
        raise UserError(str(exc)) from None
    try:
        arrays = dfl_xseg_tensors(raw)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    missing = [k for k in state if k not in arrays]
    for key, value in arrays.items():
        if key not in state:
            raise UserError(f"{path}: {key} is not part of FaceLab's XSeg network")
        if tuple(value.shape) != tuple(state[key].shape):
            raise UserError(f"{path}: {key} is {tuple(value.shape)} in the DFL model, {tuple(state[key].shape)} here")
    if missing:
        raise UserError(f"{path} does not hold a whole XSeg network ({len(missing)} tensors missing, e.g. {missing[0]})")
    with torch.no_grad():
        for key, target in state.items():
            target.copy_(torch.from_numpy(np.ascontiguousarray(arrays[key], np.float32)))
