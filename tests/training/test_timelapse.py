"""Training timelapse: one image per save of the same faces, kept across runs; the video has a frame per image."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np

from conftest import TINY, copy_workspace
from facelab.io import ffmpeg
from facelab.io.frames import list_images
from facelab.labels import is_labelled


def test_each_save_writes_one_image_of_the_same_faces_and_the_video_has_one_frame_each(train_workspace, tmp_path, script):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    model = ws.model_dir / "new_SAEHD"
    # saves at iteration 1 and at the target: two images
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", *TINY, "--target-iter", "4")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in list_images(model / "timelapse")] == ["0000001.jpg", "0000004.jpg"]
    kept = json.loads((model / "timelapse" / "faces.json").read_text())
    # an even spread of each faceset, first and last included, by name
    src_names = sorted(p.name for p in list_images(ws.aligned_dir("src")))
    assert len(kept["src"]) == 4 and kept["src"][0] == src_names[0] and kept["src"][-1] == src_names[-1]
    assert len(kept["dst"]) == 4
    first = cv2.imread(str(model / "timelapse" / "0000001.jpg"))
    assert first.shape == (4 * 64, 5 * 64, 3)  # a row per face: src, src->src, dst, dst->dst, dst->src
    # the src column of the image is the kept faces themselves, the same in every image
    later = cv2.imread(str(model / "timelapse" / "0000004.jpg"))
    assert np.abs(first[:, :64].astype(int) - later[:, :64].astype(int)).mean() < 2  # JPEG only
    assert np.abs(first[:, 64:128].astype(int) - later[:, 64:128].astype(int)).mean() > 0.5  # the model learnt
    # a second run keeps the chosen faces and adds its saves
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--target-iter", "6")
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in list_images(model / "timelapse")] == ["0000001.jpg", "0000004.jpg", "0000006.jpg"]
    assert json.loads((model / "timelapse" / "faces.json").read_text()) == kept
    proc = script("8_timelapse_to_mp4", "--workspace", str(ws.root), "--non-interactive", "--fps", "5")
    assert proc.returncode == 0, proc.stderr
    assert "3 frames, iterations 1 to 6" in proc.stdout
    info = ffmpeg.probe(model / "timelapse.mp4")
    assert info.video.frames == 3 and (info.video.width, info.video.height) == (320, 256)
    assert is_labelled(info.tags)
    assert not list(model.glob(".facelab-tmp-*"))


def test_faces_the_user_picked_and_no_timelapse(train_workspace, tmp_path, script):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    picked = {side: tmp_path / f"picked_{side}" for side in ("src", "dst")}
    for side, folder in picked.items():
        folder.mkdir()
        for face in list_images(ws.aligned_dir(side))[:2]:
            shutil.copy(face, folder / face.name)
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", *TINY, "--target-iter", "2",
                  "--timelapse-src", str(picked["src"]), "--timelapse-dst", str(picked["dst"]))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    model = ws.model_dir / "new_SAEHD"
    images = list_images(model / "timelapse")
    assert len(images) == 2 and cv2.imread(str(images[0])).shape == (2 * 64, 5 * 64, 3)
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--target-iter", "3", "--no-timelapse")
    assert proc.returncode == 0, proc.stderr
    assert len(list_images(model / "timelapse")) == 2
    # a timelapse folder without faces is one line before training starts
    (tmp_path / "empty").mkdir()
    proc = script("6_train_SAEHD", "--workspace", str(ws.root), "--non-interactive", "--target-iter", "4",
                  "--timelapse-src", str(tmp_path / "empty"))  # fmt: skip
    assert proc.returncode == 2 and "empty has no faces" in proc.stderr, proc.stderr
    assert "now at 4" not in proc.stdout
    # no images: the video says so in one line
    shutil.rmtree(model / "timelapse")
    proc = script("8_timelapse_to_mp4", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and "holds no timelapse images" in proc.stderr and proc.stderr.count("\n") == 1
