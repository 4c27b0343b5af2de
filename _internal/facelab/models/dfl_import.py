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
