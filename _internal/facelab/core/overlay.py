"""Debug overlays drawn on frames (dfl-spec §5 "Save": the aligned_debug images)."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.core.landmarks import transform_points
from facelab.core.masks import hull_mask
from facelab.types import ImageBGR

_GROUPS = [(0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False), (31, 36, False),
           (36, 42, True), (42, 48, True), (48, 60, True), (60, 68, True)]  # fmt: skip


def draw_face_debug(
    frame_bgr: ImageBGR,
    rect: tuple[float, float, float, float],
    landmarks: np.ndarray,
    mat_frame_to_face: np.ndarray | None,
    size: int,
) -> None:
    """Draw in place: hull darkened 50 %, landmark lines (green), detector box (blue), crop
    outline (red) with a small triangle marking the crop's top-left corner."""
    h, w = frame_bgr.shape[:2]
    hull = hull_mask((h, w), landmarks)[..., 0] > 0
    frame_bgr[hull] = (frame_bgr[hull] * 0.5).astype(np.uint8)
    pts = np.asarray(landmarks, np.float64)
    thickness = max(1, round(max(h, w) / 640))
    for a, b, closed in _GROUPS:
        cv2.polylines(frame_bgr, [np.rint(pts[a:b]).astype(np.int32)], closed, (0, 255, 0), thickness, cv2.LINE_AA)
    l, t, r, b = (int(round(v)) for v in rect)
    cv2.rectangle(frame_bgr, (l, t), (r, b), (255, 0, 0), thickness)
    if mat_frame_to_face is not None:
        square = transform_points(np.array([[0, 0], [size, 0], [size, size], [0, size]], float), mat_frame_to_face, invert=True)
        cv2.polylines(frame_bgr, [np.rint(square).astype(np.int32)], True, (0, 0, 255), thickness, cv2.LINE_AA)
        corner = transform_points(np.array([[0, 0], [size * 0.1, 0], [0, size * 0.1]], float), mat_frame_to_face, invert=True)
        cv2.fillConvexPoly(frame_bgr, np.rint(corner).astype(np.int32), (0, 0, 255))
