"""Debug overlays drawn on frames (dfl-spec §5 "Save": the aligned_debug images), and the
faceset info's yaw x pitch plot."""

from __future__ import annotations

import math

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


YAW_EDGES_DEG = np.arange(-90, 91, 15)
PITCH_EDGES_DEG = np.arange(-60, 61, 15)


def yaw_pitch_plot(yaw_deg: np.ndarray, pitch_deg: np.ndarray, cell: int = 40) -> np.ndarray:
    """A yaw x pitch grid: brighter = more faces, red = none (angles to look for)."""
    hist, _, _ = np.histogram2d(np.clip(pitch_deg, -59.9, 59.9), np.clip(yaw_deg, -89.9, 89.9),
                                [PITCH_EDGES_DEG, YAW_EDGES_DEG])  # fmt: skip
    ny, nx = hist.shape
    margin = 60
    img = np.full((ny * cell + margin + 20, nx * cell + margin + 20, 3), 255, np.uint8)
    peak = max(hist.max(), 1)
    for i in range(ny):
        for j in range(nx):
            y0, x0 = margin + i * cell, margin + j * cell
            n = hist[i, j]
            colour = (60, 60, 230) if n == 0 else tuple(int(255 - 200 * math.sqrt(n / peak)) for _ in range(3))
            cv2.rectangle(img, (x0, y0), (x0 + cell - 2, y0 + cell - 2), colour, -1)
            if n:
                cv2.putText(img, str(int(n)), (x0 + 3, y0 + cell // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    for j, d in enumerate(YAW_EDGES_DEG):
        cv2.putText(img, f"{d}", (margin + j * cell - 10, margin - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    for i, d in enumerate(PITCH_EDGES_DEG):
        cv2.putText(img, f"{d}", (10, margin + i * cell + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
    cv2.putText(img, "yaw", (margin, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    cv2.putText(img, "pitch", (5, margin - 25), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return img
