"""A DeepFaceLive `.dfm` (or any ONNX file with its contract) run through onnxruntime.

`DFMModel.swap` has the PyTorch model's interface (NCHW BGR [0, 1] in; swapped face, its mask and
the dst mask out, NCHW), so the merger takes either. CUDA is used where onnxruntime-gpu provides it.
FaceLab's exports carry the face type and resolution in their metadata; DFL's do not, so for those
the resolution comes from the input shape and the face type from `--face-type` (default whole face).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.core.landmarks import FaceType
from facelab.errors import UserError

INPUT = "in_face:0"
OUTPUTS = ("out_celeb_face:0", "out_celeb_face_mask:0", "out_face_mask:0")


MAX_RESOLUTION = 2048


def _whole(text: str, path: Path, what: str) -> int:
    """A metadata value that must be a count (a crafted file can put anything there)."""
    if not (isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 12):
        raise UserError(f"{path}: its {what!r} metadata {str(text)[:40]!r} is not a whole number")
    return int(text)


class DFMModel:
    def __init__(self, path: Path, face_type: str = "", device: str = "auto"):
        import onnxruntime as ort

        if not path.is_file():
            raise UserError(f"{path} does not exist: export a model with 6_export_SAEHD_onnx or give the path of a .dfm")
        wanted = ["CPUExecutionProvider"]
        if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            wanted.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), providers=wanted)
        except Exception as e:  # noqa: BLE001  onnxruntime raises its own exception types for a bad file
            raise UserError(f"{path} cannot be loaded as an ONNX model ({str(e).splitlines()[0]})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if INPUT not in inputs or not set(OUTPUTS) <= outputs:
            raise UserError(f"{path} is not a face-swap model: it needs input {INPUT} and outputs {', '.join(OUTPUTS)}")
        meta = self.session.get_modelmeta().custom_metadata_map  # a downloaded model: untrusted
        shape = inputs[INPUT].shape
        if len(shape) != 4 or shape[3] not in (3, "3"):
            raise UserError(f"{path}: its input {INPUT} is {shape}, not a batch of colour faces (N, H, W, 3)")
        res = shape[1] if isinstance(shape[1], int) else _whole(meta.get("resolution", "0"), path, "resolution")
        if not 16 <= res <= MAX_RESOLUTION:
            raise UserError(f"{path}: its face size {res} is not from 16 to {MAX_RESOLUTION} (the input size or 'resolution' metadata)")
        self.resolution = res
        try:
            self.face_type = FaceType.parse(face_type or meta.get("face_type", "wf"))
        except ValueError as e:
            raise UserError(f"{path}: {str(e)[:200]}") from None
        self.iteration = _whole(meta.get("iteration", "0"), path, "iteration")
        self.providers = self.session.get_providers()

    def swap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nhwc = np.ascontiguousarray(x.detach().float().permute(0, 2, 3, 1).cpu().numpy())
        got = self.session.run(list(OUTPUTS), {INPUT: nhwc})
        return tuple(torch.from_numpy(t).permute(0, 3, 1, 2).to(x.device) for t in got)  # type: ignore[return-value]


# ---------------------------------------------------------------- export (stages/export.py)


class DFMWrapper(nn.Module):
    """NHWC BGR in, DeepFaceLive's three outputs (NHWC) out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, in_face: torch.Tensor):  # noqa: ANN201
        face, face_mask, dst_mask = self.model.swap(in_face.permute(0, 3, 1, 2))
        nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
        return nhwc(dst_mask), nhwc(face), nhwc(face_mask)


class XSegWrapper(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, in_face: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.model(in_face.permute(0, 3, 1, 2))).clamp(0, 1)
        return m.permute(0, 2, 3, 1)
