"""Face masks from landmarks and polygons (dfl-spec §3 polygons, §4 "Masks").

All masks are float32 H x W x 1 in [0, 1], as DFL returns them; checked against
`dfl-golden/landmarks.npz` (hull, eyes, mouth) and `dfl-golden/dfljpg` (polygons). faceswap's
landmark masks (`components`, `extended`) against the masks faceswap stored in
`faceswap-golden/`.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from facelab.types import Landmarks68


def expand_eyebrows(landmarks: Landmarks68, eyebrows_expand_mod: float = 1.0) -> np.ndarray:
    """Move the brow points up, away from the eyes, by `mod` x half their distance (int64 maths as DFL)."""
    lm = np.asarray(landmarks).astype(np.int64)  # DFL truncates to integers first
    ml = (lm[36] + lm[0]) // 2
    mr = (lm[16] + lm[45]) // 2
    ql = (lm[36] + ml) // 2
    qr = (lm[45] + mr) // 2
    bot_l = np.array([ql, lm[36], lm[37], lm[38], lm[39]])
    bot_r = np.array([lm[42], lm[43], lm[44], lm[45], qr])
    top_l, top_r = lm[17:22].copy(), lm[22:27].copy()
    lm[17:22] = (top_l + eyebrows_expand_mod * 0.5 * (top_l - bot_l)).astype(np.int64)
    lm[22:27] = (top_r + eyebrows_expand_mod * 0.5 * (top_r - bot_r)).astype(np.int64)
    return lm


def hull_mask(shape_hw: Sequence[int], landmarks: Landmarks68, eyebrows_expand_mod: float = 1.0) -> np.ndarray:
    """The landmark face mask: union of eight convex parts with expanded brows."""
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.zeros((h, w, 1), np.float32)
    lm = expand_eyebrows(landmarks, eyebrows_expand_mod)
    for part in _parts(lm):
        pts = np.concatenate(part).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), (1,))
    return mask


def _parts(lm: np.ndarray) -> list[tuple[np.ndarray, ...]]:
    """The eight convex face parts (DFL's hull and faceswap's landmark masks share them)."""
    return [
        (lm[0:9], lm[17:18]), (lm[8:17], lm[26:27]), (lm[17:20], lm[8:9]), (lm[24:27], lm[8:9]),
        (lm[19:25], lm[8:9]), (lm[17:22], lm[27:28], lm[31:36], lm[8:9]),
        (lm[22:27], lm[27:28], lm[31:36], lm[8:9]), (lm[27:31], lm[31:36]),
    ]  # fmt: skip


def components_mask(shape_hw: Sequence[int], landmarks: Landmarks68) -> np.ndarray:
    """faceswap's `components` mask: the eight face parts' hulls, brows where they are,
    anti-aliased (points rounded, as faceswap draws them)."""
    return _landmark_mask(shape_hw, np.asarray(landmarks, np.float64))


def extended_mask(shape_hw: Sequence[int], landmarks: Landmarks68) -> np.ndarray:
    """faceswap's `extended` mask: `components` with the brows raised above the eyes by half
    their distance (faceswap's float maths: floor division of the midpoints)."""
    lm = np.asarray(landmarks, np.float64).copy()
    ml, mr = (lm[36] + lm[0]) // 2, (lm[16] + lm[45]) // 2
    ql, qr = (lm[36] + ml) // 2, (lm[45] + mr) // 2
    bot_l = np.array([ql, lm[36], lm[37], lm[38], lm[39]])
    bot_r = np.array([lm[42], lm[43], lm[44], lm[45], qr])
    top_l, top_r = lm[17:22].copy(), lm[22:27].copy()
    lm[17:22] = top_l + (top_l - bot_l) // 2
    lm[22:27] = top_r + (top_r - bot_r) // 2
    return _landmark_mask(shape_hw, lm)


def _landmark_mask(shape_hw: Sequence[int], lm: np.ndarray) -> np.ndarray:
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.zeros((h, w, 1), np.float32)
    for part in _parts(lm):
        pts = np.rint(np.concatenate(part)).astype(np.int32)
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), (1.0,), lineType=cv2.LINE_AA)
    return mask


LANDMARK_MASKS = {"components": components_mask, "extended": extended_mask}


def _feature_mask(shape_hw: Sequence[int], groups: Iterable[np.ndarray]) -> np.ndarray:
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.zeros((h, w, 1), np.float32)
    for pts in groups:
        cv2.fillConvexPoly(mask, cv2.convexHull(pts.astype(np.int32)), (1,))
    dilate = h // 32
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilate, dilate)), iterations=1)
    blur = h // 16
    blur += 1 - blur % 2
    return cv2.GaussianBlur(mask, (blur, blur), 0)[..., None]


def eye_mask(shape_hw: Sequence[int], landmarks: Landmarks68) -> np.ndarray:
    """Both eyes, dilated by H/32 and blurred by H/16 (DFL's eye-priority mask)."""
    lm = np.asarray(landmarks).astype(np.int64)
    return _feature_mask(shape_hw, [lm[36:42], lm[42:48]])


def mouth_mask(shape_hw: Sequence[int], landmarks: Landmarks68) -> np.ndarray:
    """The inner mouth, dilated and blurred as `eye_mask`."""
    lm = np.asarray(landmarks).astype(np.int64)
    return _feature_mask(shape_hw, [lm[60:]])


def eyes_mouth_mask(shape_hw: Sequence[int], landmarks: Landmarks68, eyebrows_expand_mod: float = 1.0) -> np.ndarray:
    """The training "eyes and mouth" mask before warping: clip(eyes + mouth) inside the hull."""
    both = np.clip(eye_mask(shape_hw, landmarks) + mouth_mask(shape_hw, landmarks), 0, 1)
    return both * (hull_mask(shape_hw, landmarks, eyebrows_expand_mod) != 0)


def polygons_mask(shape_hw: Sequence[int], polygons: Iterable[tuple[bool, np.ndarray]]) -> np.ndarray:
    """Rasterise XSeg polygons: includes first, then excludes on top (so excludes always win).

    Args:
        polygons: (include, points N x 2 in image pixels) pairs; points are truncated to int32.
    """
    h, w = int(shape_hw[0]), int(shape_hw[1])
    mask = np.zeros((h, w, 1), np.float32)
    ordered = sorted(polygons, key=lambda p: not p[0])  # stable: includes, then excludes
    for include, pts in ordered:
        pts_i = np.asarray(pts, np.float32).astype(np.int32)
        if len(pts_i) >= 3:
            cv2.fillPoly(mask, [pts_i], (1.0 if include else 0.0,))
    return mask
