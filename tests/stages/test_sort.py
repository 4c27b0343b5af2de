"""Sorting (scripts 4.2 / 5.2) on a faceset extracted from the real test media: each method
orders faces as its measure says, trash goes to <aligned>_trash, metadata is untouched."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.core.landmarks import estimate_pitch_yaw_roll, mirror_landmarks
from facelab.io.faceimage import read_face, read_meta, write_face
from facelab.io.frames import list_images
from facelab.stages.extract import ExtractOptions, extract
from facelab.stages.sort import METHODS, SortOptions, sort_faceset
from facelab.workspace import Workspace


@pytest.fixture(scope="module")
def base_faceset(tmp_path_factory, media) -> Path:
    """Aligned faces (256 px) of obama x3, biden, the six people of t1, and 12 carphone frames."""
    ws = Workspace.at(tmp_path_factory.mktemp("faceset") / "workspace")
    ws.create_layout()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg"):
        shutil.copy(media(name), ws.frames_dir("src") / name)
    cap = cv2.VideoCapture(str(media("carphone.mp4")))
    for i in range(120):
        ok, frame = cap.read()
        if ok and i % 10 == 0:
            cv2.imwrite(str(ws.frames_dir("src") / f"carphone{i:03d}.png"), cv2.resize(frame, None, fx=3, fy=3))
    extract(ws, ExtractOptions(side="src", image_size=256))
    return ws.aligned_dir("src")


@pytest.fixture
def faceset(base_faceset, tmp_path) -> Path:
    folder = tmp_path / "aligned"
    shutil.copytree(base_faceset, folder)
    return folder


def _tag(path: Path, tag: str, img: np.ndarray | None = None, meta=None) -> Path:
    """Write a copy of a face (optionally with other pixels/metadata) carrying `tag` in its metadata."""
    face_img, face_meta = read_face(path)
    meta = meta or face_meta
    out = path.with_name(f"{path.stem}_{tag}.jpg")
    write_face(out, face_img if img is None else img, replace(meta, extra={**meta.extra, "tag": tag}), jpeg_quality=95)
    return out


def _sort(folder: Path, by: str, **kw) -> list:
    report = sort_faceset(Workspace.at(folder.parent), SortOptions(by=by, input_dir=str(folder), **kw))
    assert report.counts["kept"] == len(list_images(folder))
    return [read_meta(p) for p in list_images(folder)]


def _tags(metas) -> list:
    return [m.extra.get("tag") for m in metas]


def test_blur_and_motion_blur_put_the_blurred_copy_after_the_original(faceset):
    src = faceset / "obama_0.jpg"
    img, _ = read_face(src)
    _tag(src, "sharp")
    _tag(src, "blurred", cv2.GaussianBlur(img, (0, 0), 3))
    kernel = np.zeros((15, 15), np.float32)
    kernel[7, :] = 1 / 15
    _tag(src, "smeared", cv2.filter2D(img, -1, kernel))
    tags = [t for t in _tags(_sort(faceset, "blur")) if t]
    assert tags.index("sharp") < tags.index("blurred")
    assert tags.index("sharp") < tags.index("smeared")
    tags = [t for t in _tags(_sort(faceset, "motion-blur")) if t]
    assert tags.index("sharp") < tags.index("smeared")


def test_yaw_of_a_flipped_face_flips_and_sorting_follows(faceset):
    metas = [read_meta(p) for p in list_images(faceset)]
    yaws = [estimate_pitch_yaw_roll(m.landmarks, 256)[1] for m in metas]
    turned = list_images(faceset)[int(np.argmax(np.abs(yaws)))]
    img, meta = read_face(turned)
    flipped_meta = replace(meta, landmarks=mirror_landmarks(meta.landmarks, 256).astype(np.float32))
    _tag(turned, "orig")
    _tag(turned, "flipped", np.ascontiguousarray(img[:, ::-1]), flipped_meta)
    result = _sort(faceset, "face-yaw")
    yaw = {m.extra.get("tag"): estimate_pitch_yaw_roll(m.landmarks, 256)[1] for m in result if m.extra.get("tag")}
    assert abs(yaw["orig"]) > 0.1 and np.sign(yaw["orig"]) == -np.sign(yaw["flipped"])
    assert abs(yaw["orig"] + yaw["flipped"]) < 0.1 * abs(yaw["orig"])
    all_yaws = [estimate_pitch_yaw_roll(m.landmarks, 256)[1] for m in result]
    assert all_yaws == sorted(all_yaws, reverse=True)
    pitches = [estimate_pitch_yaw_roll(m.landmarks, 256)[0] for m in _sort(faceset, "face-pitch")]
    assert pitches == sorted(pitches, reverse=True)


def test_oneface_trashes_every_face_of_multi_face_frames(faceset):
    before = {p.name for p in list_images(faceset)}
    result = _sort(faceset, "oneface")
    trash = faceset.parent / "aligned_trash"
    assert sorted(p.name for p in list_images(trash)) == sorted(n for n in before if n.startswith("t1_"))
    assert all(m.source_filename != "t1.jpg" for m in result) and len(result) == len(before) - 6


def test_similarity_chains_keep_each_person_together(faceset):
    for by in ("hist", "absdiff"):
        people = ["carphone" if m.source_filename.startswith("carphone") else "other" for m in _sort(faceset, by)]
        switches = sum(a != b for a, b in zip(people, people[1:]))
        assert switches <= 3, (by, people)  # 12 carphone faces: one or two runs, not scattered


def test_dissimilar_methods_put_the_odd_face_first(faceset):
    src = faceset / "carphone000_0.jpg"
    img, _ = read_face(src)
    _tag(src, "odd", np.clip(img.astype(int) + 140, 0, 255).astype(np.uint8))  # washed out: unlike every other face
    assert _tags(_sort(faceset, "hist-dissim"))[0] == "odd"
    assert _tags(_sort(faceset, "absdiff", dissimilar=True))[0] == "odd"


def test_brightness_black_rect_and_origname(faceset):
    src = faceset / "biden_0.jpg"
    img, _ = read_face(src)
    _tag(src, "dark", (img * 0.3).astype(np.uint8))
    framed = img.copy()
    framed[:60] = 0
    _tag(src, "black", framed)
    tags = _tags(_sort(faceset, "brightness"))
    assert tags.index(None) < tags.index("dark") and tags[-1] == "dark"
    tags = _tags(_sort(faceset, "black"))
    assert tags[-1] == "black"
    areas = [float(np.prod(m.source_rect[2:] - m.source_rect[:2])) for m in _sort(faceset, "face-source-rect-size")]
    assert areas == sorted(areas, reverse=True)
    names = [m.source_filename for m in _sort(faceset, "origname")]
    assert names == sorted(names)


def test_best_keeps_the_target_and_trashes_the_rest(faceset):
    before = [read_meta(p).to_dict() for p in list_images(faceset)]
    result = _sort(faceset, "best", target_count=8)
    assert len(result) == 8
    assert len(list_images(faceset.parent / "aligned_trash")) == len(before) - 8
    yaws = sorted(estimate_pitch_yaw_roll(m.landmarks, 256)[1] for m in result)
    assert yaws[-1] - yaws[0] > 0.2  # spread over head turns, not eight copies of one pose
    assert len(_sort(faceset, "best-fast", target_count=4)) == 4


@pytest.mark.parametrize("by", sorted(METHODS))
def test_every_method_renames_in_order_and_keeps_metadata(faceset, by):
    before = sorted(str(read_meta(p).to_dict()) for p in list_images(faceset))
    result = _sort(faceset, by, target_count=10)
    names = [p.name for p in list_images(faceset)]
    assert names == [f"{i:05d}.jpg" for i in range(len(names))]
    trash = list_images(faceset.parent / "aligned_trash")
    after = sorted(str(m.to_dict()) for m in result) + [str(read_meta(p).to_dict()) for p in trash]
    assert sorted(after) == before


def test_sort_script_headless_and_empty_folder(ws, script):
    proc = script("4.2_src_sort", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 2 and "has no faces" in proc.stderr
