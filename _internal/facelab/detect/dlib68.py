"""Optional `dlib68` landmarker: dlib's 68-point shape predictor on the detector's boxes.

More accurate than the mesh (faces.md: NME 4.6 % vs 5.4-9.4 %), not the default: the licence
caveat (faces.md) is that the model was trained on iBUG 300-W, whose licence excludes commercial
use. dlib and the model file come with the identity model's packages (setup installs them).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from facelab.detect.base import Detection, Landmarker, register_landmarker
from facelab.errors import UserError
from facelab.types import ImageBGR, Landmarks68

INSTALL = "run setup again (it installs dlib-bin and face-recognition-models)"


def registry_model(name: str) -> str:
    """Path of one of dlib's model files in `face-recognition-models`, found without importing it.

    (Its `__init__` imports `pkg_resources`, which current setuptools no longer has.)
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"no dlib model {name}: pass --landmarker-weights PATH.dat or {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise UserError(f"{path} is missing: {INSTALL}")
    return str(path)


@register_landmarker("dlib68")
class Dlib68Landmarker(Landmarker):
    def __init__(self, weights: str | None = None, **_ignored):  # noqa: ANN003
        try:
            import dlib
        except ImportError:
            raise UserError(f"the dlib68 landmarker needs dlib: {INSTALL}") from None
        if not weights:
            weights = registry_model("shape_predictor_68_face_landmarks.dat")
        self._dlib = dlib
        self.predictor = dlib.shape_predictor(str(weights))

    def landmarks(self, frame_bgr: ImageBGR, detections: Sequence[Detection]) -> list[Landmarks68 | None]:
        rgb = np.ascontiguousarray(frame_bgr[:, :, ::-1])
        out: list[Landmarks68 | None] = []
        for det in detections:
            l, t, r, b = det.rect
            # BlazeFace box -> the box dlib's predictor was trained on (faces.md, fitted on 20 pairs)
            side = 0.927 * (r - l)
            cx, cy = (l + r) / 2, (t + b) / 2 + 0.006 * (r - l)
            rect = self._dlib.rectangle(int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
            shape = self.predictor(rgb, rect)
            out.append(np.array([[p.x, p.y] for p in shape.parts()], np.float32))
        return out
