"""Face quality measures, vectorised (DFL's CPBD ran per-pixel Python loops: spec §14 item 8)."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.types import ImageBGR


def _gray_f32(img_bgr: ImageBGR) -> np.ndarray:
    gray = cv2.cvtColor(img_bgr, cv2.COLOR_BGR2GRAY) if img_bgr.ndim == 3 else img_bgr
    return gray.astype(np.float32)


def estimate_sharpness(img_bgr: ImageBGR, mask: np.ndarray | None = None) -> float:
    """Higher = sharper: mean squared Sobel gradient over local contrast, inside `mask`.

    Normalising by contrast keeps a dim but sharp face above a bright but blurred one.
    """
    gray = _gray_f32(img_bgr)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    energy = gx * gx + gy * gy
    weights = np.ones_like(gray) if mask is None else (np.asarray(mask, np.float32).reshape(gray.shape) > 0.5)
    n = float(weights.sum())
    if n == 0:
        return 0.0
    contrast = float(gray[weights > 0].std()) + 1.0
    return float((energy * weights).sum() / n) / (contrast * contrast)


def estimate_motion_blur(img_bgr: ImageBGR, mask: np.ndarray | None = None) -> float:
    """DFL's motion-blur sort key: variance of the Laplacian (aperture 11) of the masked face."""
    gray = _gray_f32(img_bgr)
    if mask is not None:
        gray = gray * np.asarray(mask, np.float32).reshape(gray.shape)
    return float(cv2.Laplacian(gray.astype(np.float64), cv2.CV_64F, ksize=11).var())
