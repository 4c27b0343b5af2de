"""faceswap's landmark masks (`components`, `extended`) against the masks faceswap itself stored
for the 18 faces of faceswap-golden: drawn at 256 px in the mask's own framing and reduced to its
128 px with INTER_AREA, as faceswap does, within one grey level."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facelab.core.landmarks import transform_points
from facelab.core.masks import LANDMARK_MASKS, hull_mask
from golden import faceswap_golden


@pytest.mark.parametrize("name", sorted(LANDMARK_MASKS))
def test_landmark_masks_match_the_ones_faceswap_stored(name):
    """Within one grey level everywhere, except where the crop runs off the frame (faceswap's
    stored masks stop at the frame's edge; there a pixel's worth of the edge differs)."""
    root = faceswap_golden()
    faces = json.loads((root / "expected.json").read_text())["faces"]
    assert len(faces) == 18
    for face in faces:
        stored = face["masks"][name]
        ref = cv2.imread(str(root / stored["face_space_png"]), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
        frame_to_256 = np.float64(stored["affine_matrix"]) * 2
        mine = LANDMARK_MASKS[name]((256, 256), transform_points(np.float32(face["landmarks_xy"]), frame_to_256))[..., 0]
        inside = cv2.warpAffine(np.ones((720, 1280), np.float32), frame_to_256, (256, 256), flags=cv2.INTER_NEAREST)
        diff = np.abs(cv2.resize(mine * inside, (128, 128), interpolation=cv2.INTER_AREA) - ref) * 255
        edge = cv2.dilate((cv2.resize(inside, (128, 128), interpolation=cv2.INTER_AREA) < 1).astype(np.uint8), np.ones((3, 3)))
        assert diff[edge == 0].max() <= 1.5, (face["face_png"], name)
        assert diff.mean() < 0.1 and (diff > 2).sum() < 50, (face["face_png"], name)


def test_extended_reaches_above_components_and_close_to_dfls_hull():
    lm = np.float32(json.loads((faceswap_golden() / "expected.json").read_text())["faces"][0]["alignment_to_frame"]["landmarks_in_face_px"])
    comp, ext = (LANDMARK_MASKS[n]((512, 512), lm)[..., 0] > 0.5 for n in ("components", "extended"))
    assert (comp <= ext).all() and ext.sum() > 1.05 * comp.sum()  # the forehead above the brows
    top = lambda m: np.argmax(m.any(1))  # noqa: E731
    assert top(ext) < top(comp)
    dfl = hull_mask((512, 512), lm)[..., 0] > 0.5  # DFL's hull: the same parts and brows, integer maths
    assert (dfl & ext).sum() / (dfl | ext).sum() > 0.98
