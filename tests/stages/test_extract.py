"""Face extraction (scripts 4 and 5) on real photos and the carphone video.

What a user checks: every face found, landmarks on the face, upright centred crops, one file per
face in a group photo, resuming instead of wiping, clear messages for empty or broken input.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facelab.core.landmarks import FaceType
from facelab.io.faceimage import read_face, read_meta
from facelab.io.frames import list_images

PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "Tom_Hanks_54745.png"]


@pytest.fixture(scope="module")
def carphone_dst(tmp_path_factory, media):
    """A workspace with carphone's 120 frames in data_dst (extracted by script 3)."""
    from conftest import run_script
    from facelab.workspace import Workspace

    ws = Workspace.at(tmp_path_factory.mktemp("carphone") / "workspace")
    ws.create_layout()
    shutil.copy(media("carphone.mp4"), ws.root / "data_dst.mp4")
    assert run_script("3_extract_images_dst", "--workspace", str(ws.root), "--non-interactive").returncode == 0
    return ws


def _copy_frames(src_ws, dst_ws) -> None:
    for p in list_images(src_ws.frames_dir("dst")):
        shutil.copy(p, dst_ws.frames_dir("dst") / p.name)


def _eye_angle_deg(lm: np.ndarray) -> float:
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def _check_face_on_box(meta) -> None:
    l, t, r, b = meta.source_rect
    lm = meta.source_landmarks
    w, h = r - l, b - t
    eyes = lm[36:48]
    assert (eyes[:, 0] > l - 0.1 * w).all() and (eyes[:, 0] < r + 0.1 * w).all()
    assert (eyes[:, 1] > t - 0.1 * h).all() and (eyes[:, 1] < t + 0.7 * h).all(), "eyes not in the upper box"
    assert lm[36:42, 0].mean() < lm[42:48, 0].mean(), "subject's right eye must be on the image left"
    assert lm[48:68, 1].mean() > lm[36:48, 1].mean() and lm[8, 1] > lm[57, 1], "mouth below eyes, chin below mouth"


def test_carphone_every_frame_has_its_face(carphone_dst, script):
    ws = carphone_dst
    proc = script("5_dst_faceset_extract", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    assert "120 faces from 120 frames" in proc.stdout and "0 frames without a face" in proc.stdout
    faces = list_images(ws.aligned_dir("dst"))
    assert [p.name for p in faces] == [f"{i:05d}_0.jpg" for i in range(1, 121)]
    assert len(list_images(ws.aligned_debug_dir("dst"))) == 120
    for path in faces[::10]:
        img, meta = read_face(path)
        assert img.shape == (512, 512, 3) and meta.face_type is FaceType.WHOLE_FACE
        assert meta.source_filename == path.name.replace("_0.jpg", ".png")
        _check_face_on_box(meta)
        assert abs(_eye_angle_deg(meta.landmarks)) < 4, "aligned face is not upright"
        centre = meta.landmarks[[36, 45, 30, 48, 54]].mean(0)
        assert np.all(np.abs(centre - 256) < 60), "aligned face is not centred"
        # the stored matrix maps frame landmarks onto the stored aligned landmarks
        mapped = meta.source_landmarks @ meta.image_to_face_mat[:, :2].T + meta.image_to_face_mat[:, 2]
        np.testing.assert_allclose(mapped, meta.landmarks, atol=1e-2)
    assert len({read_meta(p).track_id for p in faces}) == 1  # one person, one track


def test_photos_one_face_each_landmarks_on_face(ws, media, script):
    for name in PHOTOS:
        shutil.copy(media(name), ws.frames_dir("src") / name)
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive", "--face-type", "f")
    assert proc.returncode == 0, proc.stderr
    faces = list_images(ws.aligned_dir("src"))
    assert sorted(p.name for p in faces) == sorted(f"{n.rsplit('.', 1)[0]}_0.jpg" for n in PHOTOS)
    for path in faces:
        meta = read_meta(path)
        assert meta.face_type is FaceType.FULL
        _check_face_on_box(meta)
        assert abs(_eye_angle_deg(meta.landmarks)) < 4


def test_group_photo_one_file_per_face_largest_first(ws, media, script):
    shutil.copy(media("t1.jpg"), ws.frames_dir("src") / "t1.jpg")
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive", "--output-debug")
    assert proc.returncode == 0, proc.stderr
    faces = list_images(ws.aligned_dir("src"))
    assert [p.name for p in faces] == [f"t1_{i}.jpg" for i in range(6)]
    areas = []
    for p in faces:
        meta = read_meta(p)
        _check_face_on_box(meta)
        l, t, r, b = meta.source_rect
        areas.append((r - l) * (b - t))
    assert areas == sorted(areas, reverse=True)
    assert len({tuple(np.round(read_meta(p).source_rect)) for p in faces}) == 6  # six different people
    assert (ws.aligned_debug_dir("src") / "t1.jpg").exists()
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive", "--max-faces", "2",
                  "--overwrite")  # fmt: skip
    assert proc.returncode == 0 and len(list_images(ws.aligned_dir("src"))) == 2


def test_resume_continues_after_last_frame_and_keeps_deleted_faces_deleted(carphone_dst, tmp_path, script):
    from facelab.workspace import Workspace

    ws = Workspace.at(tmp_path / "ws")
    ws.create_layout()
    _copy_frames(carphone_dst, ws)
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert script("5_dst_faceset_extract", *args).returncode == 0
    state_path = ws.aligned_dir("dst") / ".facelab_extract.json"
    state = json.loads(state_path.read_text())
    # as if the run had been killed after frame 60
    state["done_through"] = "00060.png"
    state_path.write_text(json.dumps(state))
    for p in list_images(ws.aligned_dir("dst"))[60:]:
        p.unlink()
    (ws.aligned_dir("dst") / "00010_0.jpg").unlink()  # the user deleted a bad face
    kept = {p.name: p.stat().st_mtime_ns for p in list_images(ws.aligned_dir("dst"))}
    proc = script("5_dst_faceset_extract", *args)
    assert proc.returncode == 0, proc.stderr
    assert "continuing after 00060.png: 60 of 120 frames left" in proc.stderr
    assert "60 faces from 60 frames" in proc.stdout
    after = list_images(ws.aligned_dir("dst"))
    assert len(after) == 119 and not (ws.aligned_dir("dst") / "00010_0.jpg").exists()
    assert all(p.stat().st_mtime_ns == kept[p.name] for p in after if p.name in kept)
    # other settings: asks first, deletes nothing headless
    proc = script("5_dst_faceset_extract", *args, "--face-type", "f")
    assert proc.returncode == 2 and "already holds 119 faces" in proc.stderr and "--overwrite" in proc.stderr
    assert len(list_images(ws.aligned_dir("dst"))) == 119


def test_no_faces_and_unreadable_frames(ws, script):
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(ws.frames_dir("src") / f"{i + 1:05d}.png"), rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    (ws.frames_dir("src") / "00004.png").write_bytes(b"not a png")
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    assert "0 faces from 4 frames" in proc.stdout and "3 frames without a face" in proc.stdout
    assert "1 unreadable frames skipped: 00004.png" in proc.stdout


def test_empty_frames_folder_is_a_clear_error(ws, script):
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "run 2_extract_images_src first" in proc.stderr


def _trajectory(ws) -> np.ndarray:
    return np.stack([read_meta(p).source_landmarks for p in list_images(ws.aligned_dir("dst"))])


def _jitter(traj: np.ndarray) -> float:
    """Mean |second difference| of the points as % of the inter-ocular distance (faces.md)."""
    iod = np.linalg.norm(traj[:, 36:42].mean(1) - traj[:, 42:48].mean(1), axis=1).mean()
    return float(np.abs(np.diff(traj, 2, axis=0)).mean() / iod * 100)


def test_smoothing_cuts_jitter_without_lag(carphone_dst, tmp_path, script):
    from facelab.workspace import Workspace

    frames = list_images(carphone_dst.frames_dir("dst"))
    trajectories = {}
    for smooth in (False, True):
        ws = Workspace.at(tmp_path / f"smooth_{smooth}")
        ws.create_layout()
        # the carphone clip upscaled x2 and panned 2 px per frame: a face in steady motion
        for i, p in enumerate(frames):
            img = cv2.resize(cv2.imread(str(p)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
            canvas = np.zeros((288, 352 + 240, 3), np.uint8)
            canvas[:, 2 * i : 2 * i + 352] = img
            cv2.imwrite(str(ws.frames_dir("dst") / p.name), canvas)
        flag = "--smooth-landmarks" if smooth else "--no-smooth-landmarks"
        proc = script("5_dst_faceset_extract", "--workspace", str(ws.root), "--non-interactive", flag)
        assert proc.returncode == 0, proc.stderr
        trajectories[smooth] = _trajectory(ws)
    raw, smoothed = trajectories[False], trajectories[True]
    assert _jitter(smoothed) < 0.8 * _jitter(raw), (_jitter(raw), _jitter(smoothed))
    # no lag: following a face moving 2 px/frame, the smoothed points do not trail the raw ones
    lag_px = (smoothed[:, :, 0] - raw[:, :, 0]).mean()
    assert abs(lag_px) < 0.3, lag_px


def test_faceset_dump_prints_one_json_object_per_face(carphone_dst, script):
    aligned = carphone_dst.aligned_dir("dst")
    if not list_images(aligned):
        assert script("5_dst_faceset_extract", "--workspace", str(carphone_dst.root), "--non-interactive").returncode == 0
    proc = subprocess.run([sys.executable, "-m", "facelab", "faceset", "dump", str(aligned)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 120
    first = json.loads(lines[0])
    assert first["file"] == "00001_0.jpg" and first["face_type"] == "whole_face"
    assert len(first["landmarks"]) == 68 and len(first["image_to_face_mat"]) == 2
    assert "120 faces in" in proc.stderr


def test_s3fd_without_weights_is_one_clear_line(ws, media, script):
    shutil.copy(media("obama.jpg"), ws.frames_dir("src") / "obama.jpg")
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive", "--detector", "s3fd")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "--detector-weights" in proc.stderr and "does not download" in proc.stderr


def test_a_batch_that_runs_out_of_memory_is_split_and_gives_the_same_faces(ws, media, monkeypatch, caplog):
    import logging

    import torch

    from facelab.detect.blazeface import BlazeFaceDetector, FaceMeshLandmarker
    from facelab.io.faceset import load_faceset
    from facelab.stages.extract import ExtractOptions, extract

    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"):
        shutil.copy(media(name), ws.frames_dir("src") / name)
    extract(ws, ExtractOptions(side="src", image_size=256))
    before = {f.path.name: f.meta.landmarks for f in load_faceset(ws.aligned_dir("src"))}
    shutil.rmtree(ws.aligned_dir("src"))

    for cls, name in ((BlazeFaceDetector, "detect_batch"), (FaceMeshLandmarker, "landmarks_batch")):
        original = getattr(cls, name)

        def only_one(self, frames, *rest, original=original):  # noqa: ANN001, ANN002, ANN202
            if len(frames) > 1:
                raise torch.OutOfMemoryError("CUDA out of memory (injected by the test)")
            return original(self, frames, *rest)

        monkeypatch.setattr(cls, name, only_one)
    with caplog.at_level(logging.WARNING):
        extract(ws, ExtractOptions(side="src", image_size=256))
    after = {f.path.name: f.meta.landmarks for f in load_faceset(ws.aligned_dir("src"))}
    assert after.keys() == before.keys() and len(after) == 4
    for key, lm in before.items():
        assert np.array_equal(after[key], lm)
    warned = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert any(m.startswith("face detection: out of memory with 4 at once") for m in warned)
    assert any(m.startswith("landmarks: out of memory") for m in warned), warned
