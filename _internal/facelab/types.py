"""Type aliases that say shape, dtype and colour order (ARCHITECTURE.md §4)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

ImageBGR = npt.NDArray[np.uint8]
"""H x W x 3 uint8, OpenCV's BGR order."""

Mask = npt.NDArray[np.float32]
"""H x W (or H x W x 1) float32 in [0, 1]."""

Landmarks68 = npt.NDArray[np.float32]
"""68 x 2 float32 pixel coordinates (x, y), iBUG 300-W order."""

Affine2x3 = npt.NDArray[np.float64]
"""2 x 3 float64 affine matrix; the variable name says its direction (`mat_frame_to_face`)."""

Side = Literal["src", "dst"]
"""Which person a stage works on: `src` (the face to put in) or `dst` (the video to change)."""
