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
from facelab.io.faceimage import load_dfl_pickle

PARTS = {"df": ("encoder", "inter", "decoder_src", "decoder_dst"), "liae": ("encoder", "inter_AB", "inter_B", "decoder")}


def dfl_key_to_ours(part: str, key: str) -> str:
    key = key.split(":")[0]
    key = re.sub(r"/(\w+?)_(\d+)(?=/)", r"/\1.\2", "/" + key)[1:]
    return f"{part}." + key.replace("/", ".")


def read_dfl_part(path: Path, part: str) -> dict[str, torch.Tensor]:
    raw = load_dfl_pickle(Path(path).read_bytes(), Path(path).name)
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a DFL weights file")
    out = {}
    for key, value in raw.items():
        arr = np.asarray(value, np.float32)
        if arr.ndim == 4:
            arr = arr.transpose(3, 2, 0, 1)
        elif arr.ndim == 2:
            arr = arr.T
        out[dfl_key_to_ours(part, str(key))] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def load_dfl_weights(model: nn.Module, folder: Path, prefix: str, kind: str) -> None:
    """Load `<folder>/<prefix>_<part>.npy` for every part of `kind` (df / liae) into `model`."""
    weights: dict[str, torch.Tensor] = {}
    for part in PARTS[kind]:
        path = Path(folder) / f"{prefix}_{part}.npy"
        if not path.exists():
            raise UserError(f"{path} is missing: a DFL {kind} model needs {', '.join(PARTS[kind])}")
        weights.update(read_dfl_part(path, part))
    state = model.state_dict()
    missing = [k for k in state if k not in weights]
    extra = [k for k in weights if k not in state]
    if missing or extra:
        raise UserError(
            f"the DFL model in {folder} does not match this architecture "
            f"({len(missing)} tensors missing, e.g. {missing[:1]}; {len(extra)} unexpected, e.g. {extra[:1]})"
        )
    with torch.no_grad():
        for key, target in state.items():
            if tuple(weights[key].shape) != tuple(target.shape):
                raise UserError(f"{key}: DFL has {tuple(weights[key].shape)}, this architecture {tuple(target.shape)}")
            target.copy_(weights[key])
