"""Geometry against DeepFaceLab's own numbers (dfl-golden/landmarks.npz)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facelab.core import landmarks as L
from facelab.core import masks as M
from golden import golden

FACE_TYPES = ["half", "mid_full", "full", "full_no_align", "whole_face", "head", "head_no_align"]


@pytest.fixture(scope="module")
def g():
    return np.load(golden("landmarks.npz"))


@pytest.fixture(scope="module")
def index():
    return json.loads(golden("landmarks_index.json").read_text())


def test_umeyama_matches_dfl(g):
    for i, lm in enumerate(g["landmarks"]):
        np.testing.assert_allclose(L.umeyama_to_mean_face(lm), g["umeyama_mat"][i], atol=1e-6)


def test_transform_matrices_map_points_within_1e3_px(g, index):
    assert index["face_types"] == FACE_TYPES
    for i, lm in enumerate(g["landmarks"]):
        for t, (name, enum_value) in enumerate(zip(index["face_types"], index["face_type_enum_values"])):
            ft = L.FaceType(enum_value)
            for s, size in enumerate(index["sizes"]):
                ours = L.get_transform_mat(lm, size, ft)
                theirs = g["transform_mat"][i, t, s]
                np.testing.assert_allclose(ours[:, :2], theirs[:, :2], atol=1e-5, err_msg=f"set {i} {name} {size}")
                # the acceptance criterion: the same points land within 1e-3 px of DFL's on the square
                np.testing.assert_allclose(
                    L.transform_points(lm, ours), L.transform_points(lm, theirs), atol=1e-3,
                    err_msg=f"set {i} {name} {size}",
                )  # fmt: skip


def test_scaled_full_face(g):
    for i, lm in enumerate(g["landmarks"]):
        for scale in (1.1, 0.9):
            ours = L.get_transform_mat(lm, 256, L.FaceType.FULL, scale=scale)
            theirs = g[f"transform_mat_full256_scale{scale}"][i]
            np.testing.assert_allclose(L.transform_points(lm, ours), L.transform_points(lm, theirs), atol=1e-3)


def test_points_round_trip_and_rect(g):
    lm = g["landmarks"][2]
    mat = L.get_transform_mat(lm, 512, "wf")
    np.testing.assert_allclose(L.transform_points(L.transform_points(lm, mat), mat, invert=True), lm, atol=1e-4)
    np.testing.assert_allclose(L.get_rect_from_landmarks(lm), g["rect_from_landmarks"][2], atol=1e-4)
    np.testing.assert_allclose(L.transform_points(lm, mat), g["tp_forward_wf512"][2], atol=1e-3)


def test_masks_match_dfl_up_to_edge_pixels(g):
    for i, lm in enumerate(g["aligned_wf512_landmarks"]):
        np.testing.assert_array_equal(M.expand_eyebrows(lm), g["expand_eyebrows_wf512"][i])
        hull = M.hull_mask((512, 512), lm)
        assert np.count_nonzero(hull != g["hull_mask_wf512"][i]) <= 0.001 * hull.size
        for name, fn in (("eye_mask", M.eye_mask), ("mouth_mask", M.mouth_mask), ("eyes_mouth_mask", M.eyes_mouth_mask)):
            ours = fn((512, 512), lm)
            np.testing.assert_allclose(ours, g[f"{name}_wf512"][i], atol=1e-5, err_msg=f"{name} set {i}")


def test_pose_matches_dfl(g):
    for i, lm in enumerate(g["aligned_wf512_landmarks"]):
        pyr = L.estimate_pitch_yaw_roll(lm, 512)
        np.testing.assert_allclose(pyr[:2], g["pitch_yaw_roll_wf512"][i][:2], atol=1e-3)
        np.testing.assert_allclose(L.estimate_pitch_yaw_roll(g["tp_forward_full256"][i], 256)[:2],
                                   g["pitch_yaw_roll_full256"][i][:2], atol=1e-3)  # fmt: skip
        assert L.estimate_averaged_yaw(g["landmarks"][i]) == pytest.approx(g["averaged_yaw_raw"][i], abs=1e-4)
        assert L.estimate_averaged_yaw(lm) == pytest.approx(g["averaged_yaw_wf512"][i], abs=1e-3)
        assert L.calc_face_pitch(lm) == pytest.approx(g["calc_face_pitch_wf512"][i], abs=1e-3)


def test_mirror_matches_dfl_and_flips_yaw(g):
    np.testing.assert_allclose(L.mirror_landmarks(g["landmarks"][1], 1280), g["landmarks"][3], atol=1e-4)
    lm = g["aligned_wf512_landmarks"][4]  # the synthetic yaw 25 deg face
    yaw = L.estimate_pitch_yaw_roll(lm, 512)[1]
    yaw_flipped = L.estimate_pitch_yaw_roll(L.mirror_landmarks(lm, 512), 512)[1]
    assert abs(yaw) > 0.2 and np.sign(yaw) == -np.sign(yaw_flipped)


def test_face_type_parsing():
    assert L.FaceType.parse("wf") is L.FaceType.WHOLE_FACE
    assert L.FaceType.parse("whole_face") is L.FaceType.WHOLE_FACE
    assert L.FaceType.parse(10) is L.FaceType.HEAD
    with pytest.raises(ValueError, match="unknown face type"):
        L.FaceType.parse("face")


def test_polygons_exclude_wins():
    square = np.array([[10, 10], [90, 10], [90, 90], [10, 90]], np.float32)
    hole = np.array([[40, 40], [60, 40], [60, 60], [40, 60]], np.float32)
    mask = M.polygons_mask((100, 100), [(False, hole), (True, square)])
    assert mask[50, 50, 0] == 0 and mask[20, 20, 0] == 1 and mask[5, 5, 0] == 0
