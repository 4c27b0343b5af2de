"""Compositing one face (core/blend.py): the windowed paste against a whole-frame reference, the
raw-rgb square, faces at the frame's edge, uint8 and float frames alike."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from facelab.core.blend import FaceInput, MergeConfig, merge_face, paste_face, refine_mask, face_mask
from facelab.core.landmarks import LANDMARKS_68_3D, FaceType, get_transform_mat

S = 64


def _frame(h: int = 360, w: int = 640) -> np.ndarray:
    """A textured float32 frame: gradients and noise, so any misplaced pixel shows."""
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.dstack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 17) * np.cos(y / 11)])
    return np.clip(img + rng.normal(0, 0.03, img.shape), 0, 1).astype(np.float32)


def _face(frame: np.ndarray, centre: tuple[float, float], size: float = 0.9, angle: float = 15.0) -> FaceInput:
    """A face whose landmarks are the 3D mean face turned by `angle`, scaled and placed at `centre`."""
    a = np.radians(angle)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lm = LANDMARKS_68_3D[:, :2].astype(np.float64) @ rot.T * size + np.array(centre)
    crop = cv2.warpAffine(frame, get_transform_mat(lm, S, FaceType.FULL), (S, S), flags=cv2.INTER_CUBIC)
    mask = np.zeros((S, S), np.float32)
    cv2.circle(mask, (S // 2, S // 2 + 4), S // 3, 1.0, -1)
    pred = np.clip(crop[..., ::-1] * 0.7 + 0.2, 0, 1).copy()
    return FaceInput(lm, FaceType.FULL, S, pred, mask, np.clip(mask * 1.2, 0, 1), crop, mask, mask, (6.0, 20.0))


def _reference(frame: np.ndarray, face: FaceInput, cfg: MergeConfig) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward whole-frame composite (every warp at the frame's size), for modes
    without seamless cloning or post effects."""
    h, w = frame.shape[:2]
    out_mat = get_transform_mat(face.landmarks, S, face.face_type, scale=1 + cfg.output_face_scale / 100)
    big = refine_mask(face_mask(face, cfg), S, cfg)
    m = cv2.warpAffine(big, np.array(out_mat) * 4.0, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    m = np.clip(m, 0, 1)
    m[m < 1 / 255] = 0
    from facelab.core.blend import MODES

    new_face = MODES.get(cfg.mode)(face, face_mask(face, cfg), cfg)
    pasted = cv2.warpAffine(new_face, out_mat, (w, h), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(frame * (1 - m[..., None]) + pasted * m[..., None], 0, 1), m


@pytest.mark.parametrize("cfg", [MergeConfig(), MergeConfig(mode="hist-match", mask_mode="learned-prd+dst"), MergeConfig(mask_mode="full"),
                                 MergeConfig(erode=-30, blur=40, output_face_scale=10, color_transfer="lct")])  # fmt: skip
def test_windowed_paste_equals_the_whole_frame_composite(cfg):
    frame = _frame()
    face = _face(frame, (300, 170))
    out, mask = merge_face(frame, face, cfg)
    ref_out, ref_mask = _reference(frame, face, cfg)
    assert mask.max() > 0.99 and (mask > 0).sum() > 2000
    # the same pixels: only OpenCV's 1/32 px coordinate rounding may differ with the window's origin
    assert np.abs(mask - ref_mask).max() < 0.02 and np.abs(mask - ref_mask).mean() < 1e-4
    assert np.abs(out - ref_out).max() < 0.02 and np.abs(out - ref_out).mean() < 1e-4
    assert ((mask > 0) == (ref_mask > 0)).mean() > 0.9999
    assert (out[mask == 0] == frame[mask == 0]).all(), "a pixel outside the mask changed"


def test_uint8_frames_blend_as_float_frames_rounded():
    frame = _frame()
    face = _face(frame, (320, 180))
    frame8 = (frame * 255 + 0.5).astype(np.uint8)
    paste = paste_face(frame8, face, MergeConfig())
    out8 = frame8.copy()
    paste.blend_into(out8)
    out, _ = merge_face(frame8.astype(np.float32) / 255, face, MergeConfig())
    assert np.abs(out8.astype(int) - (out * 255 + 0.5).astype(int)).max() <= 1
    ys, xs = paste.window
    outside = np.ones(frame.shape[:2], bool)
    outside[ys, xs] = False
    assert (out8[outside] == frame8[outside]).all()
    assert 0 < paste.mask.shape[0] * paste.mask.shape[1] < frame.shape[0] * frame.shape[1] / 4  # a window, not the frame


@pytest.mark.parametrize("centre", [(20, 180), (620, 20), (320, 350)])
def test_faces_cut_by_the_frame_edge(centre):
    frame = _frame()
    face = _face(frame, centre)
    out, mask = merge_face(frame, face, MergeConfig())
    _, ref_mask = _reference(frame, face, MergeConfig())
    assert mask.max() > 0.99 and np.abs(mask - ref_mask).max() < 0.02
    assert (out[mask == 0] == frame[mask == 0]).all()


def test_face_outside_the_frame_pastes_nothing():
    frame = _frame()
    face = _face(frame, (2000, 2000))
    assert paste_face(frame, face, MergeConfig()) is None
    out, mask = merge_face(frame, face, MergeConfig())
    assert (out == frame).all() and mask.max() == 0


def test_raw_rgb_pastes_the_whole_square_and_records_the_mask():
    frame = _frame()
    face = _face(frame, (320, 180), angle=0)
    cfg = MergeConfig(mode="raw-rgb", mask_mode="learned-prd")
    out, mask = merge_face(frame, face, cfg)
    mat = get_transform_mat(face.landmarks, S, face.face_type)
    back = cv2.warpAffine(out, mat, (S, S), flags=cv2.INTER_CUBIC)  # the square, cut out of the result
    inner = slice(4, S - 4)
    assert np.abs(back[inner, inner] - face.pred_face[inner, inner]).mean() < 0.01, "the square's corners are the swapped face too"
    # merged_mask records the mode's mask (the circle), not the square
    mask_face = cv2.warpAffine(mask, mat, (S, S), flags=cv2.INTER_CUBIC)
    assert mask_face[S // 2, S // 2] > 0.9 and mask_face[6, 6] < 0.05


def test_seamless_in_a_window_changes_only_the_face():
    frame = _frame()
    face = _face(frame, (320, 180))
    for mode in ("seamless", "seamless-hist-match"):
        out, mask = merge_face(frame, face, replace(MergeConfig(), mode=mode))
        assert (out[mask == 0] == frame[mask == 0]).all()
        assert np.abs(out - frame)[mask > 0.5].mean() > 0.01
