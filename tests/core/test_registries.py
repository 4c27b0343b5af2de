"""Contract tests over every registered merge mode and colour transfer (as test_models.py does
for the models): what each plugin takes and returns, whatever is registered later."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facelab.core import color as C
from facelab.core.blend import MergeConfig, list_modes, merge_face
from facelab.core.registry import Registry
from test_blend import _face, _frame

S = 64


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """target (the swapped face), source (the dst face): H x W x 3 float32 BGR [0, 1]; a mask H x W x 1."""
    rng = np.random.default_rng(seed)
    target = np.clip(rng.normal([0.3, 0.5, 0.7], 0.15, (S, S, 3)), 0, 1).astype(np.float32)
    source = np.clip(rng.normal([0.6, 0.4, 0.3], 0.1, (S, S, 3)), 0, 1).astype(np.float32)
    mask = np.zeros((S, S, 1), np.float32)
    cv2.circle(mask, (S // 2, S // 2), S // 3, 1.0, -1)
    return target, source, mask


@pytest.mark.parametrize("name", C.list_colors())
def test_every_colour_transfer_keeps_shape_dtype_and_range(name):
    target, source, mask = _pair(0)
    out = C.create_color(name)(target, source, mask, rng=np.random.default_rng(0))
    assert out.shape == target.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= -1e-4 and out.max() <= 1 + 1e-4, (out.min(), out.max())
    if name != "none":  # each transfer moves the target's colours toward the source's
        before = np.abs(target[mask[..., 0] > 0].mean(0) - source[mask[..., 0] > 0].mean(0)).sum()
        after = np.abs(out[mask[..., 0] > 0].mean(0) - source[mask[..., 0] > 0].mean(0)).sum()
        assert after < 0.8 * before, (name, before, after)
    else:
        assert np.array_equal(out, target)


@pytest.mark.parametrize("mode", list_modes())
@pytest.mark.parametrize("mask_mode", ["dst", "learned-prd*dst"])
def test_every_merge_mode_changes_only_pixels_under_its_mask(mode, mask_mode):
    frame = _frame()
    face = _face(frame, (320, 180))
    out, mask = merge_face(frame, face, MergeConfig(mode=mode, mask_mode=mask_mode))
    if mode == "raw-predict":  # the model's face alone, at the model's size
        assert out.shape == (S, S, 3) and np.isfinite(out).all()
        return
    assert out.shape == frame.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1 and mask.shape == frame.shape[:2] and 0 <= mask.min() <= mask.max() <= 1
    touched = mask > 0
    if mode == "raw-rgb":  # DFL pastes the whole square; the mask only goes to merged_mask
        touched = cv2.warpAffine(np.ones((S, S), np.float32), face_square(face), frame.shape[1::-1],
                                 flags=cv2.WARP_INVERSE_MAP | cv2.INTER_LINEAR) > 0  # fmt: skip
    far = cv2.dilate(touched.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert np.array_equal(out[far], frame[far]), f"{mode} changed pixels outside its mask"
    if mode != "original":
        assert np.abs(out - frame)[mask > 0.5].mean() > 0.01, f"{mode} did not change the face"
    else:
        assert np.array_equal(out, frame)


def face_square(face) -> np.ndarray:  # noqa: ANN001
    from facelab.core.landmarks import get_transform_mat

    return get_transform_mat(face.landmarks, S, face.face_type)


def test_registry_refuses_twice_and_unknown_names():
    reg = Registry("widget")
    reg.register("a")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(lambda: 2)
    with pytest.raises(ValueError, match="unknown widget 'b'; available: a"):
        reg.get("b")
    assert reg.create("a") == 1 and reg.names() == ["a"]
