"""Identity (issue 16) on real faces: the three Obama photos and Biden's (face_recognition), the
six people of insightface's t1.jpg, and carphone's man. Embeddings from our own landmarks; sort
by face, split-identities, extraction and merge restricted to one person; bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import TINY, copy_workspace
from facelab.core.identity import TrackIdentities, clusters, dissimilarity
from facelab.io.faceimage import read_meta, write_meta
from facelab.io.frames import list_images, read_image
from facelab.workspace import Workspace

PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg")


@pytest.fixture(scope="module")
def models():
    from facelab.detect.base import create_detector, create_identity, create_landmarker

    return create_detector("blazeface"), create_landmarker("facemesh68"), create_identity()


def _embed_all(image, models) -> list[np.ndarray]:
    detector, landmarker, identity = models
    dets = detector.detect(image)
    return identity.embed(image, [m for m in landmarker.landmarks(image, dets) if m is not None])


def test_same_person_is_under_the_threshold_and_different_people_over_it(media, models):
    identity = models[2]
    obama = [_embed_all(cv2.imread(str(media(n))), models)[0] for n in ("obama.jpg", "obama2.jpg", "obama3.jpg")]
    others = _embed_all(cv2.imread(str(media("biden.jpg"))), models) + _embed_all(cv2.imread(str(media("t1.jpg"))), models)
    assert len(others) == 7 and all(e.shape == (identity.dims,) and np.isfinite(e).all() for e in obama + others)
    cap = cv2.VideoCapture(str(media("carphone.mp4")))
    frames = []
    for i in range(100):
        ok, frame = cap.read()
        if i in (0, 99):
            frames.append(cv2.resize(frame, None, fx=2, fy=2))
    carphone = [_embed_all(f, models)[0] for f in frames]
    same = [np.linalg.norm(a - b) for group in (obama, carphone) for k, a in enumerate(group) for b in group[k + 1 :]]
    different = [np.linalg.norm(a - b) for a in obama + carphone for b in others] + [
        np.linalg.norm(a - b) for a in obama for b in carphone
    ]
    assert max(same) < identity.threshold < min(different), (max(same), min(different))


def test_track_identities_sample_along_a_track_and_split_where_the_person_changes():
    ids = iter(range(100, 200))
    calls = []

    def embed(idx):  # noqa: ANN001, ANN202
        calls.append(frame)
        return [np.array([0.0, 0.0]) if frame < 20 else np.array([1.0, 0.0])]

    tracks = TrackIdentities(0.6, lambda: next(ids), every=8)
    out = []
    for frame in range(30):  # the box tracker says track 7 throughout; the person changes at frame 20
        out.append(tracks.assign(frame, [7], embed)[0])
    assert calls == [0, 8, 16, 24]  # sampled every 8 frames, not on every face
    assert {t for t, _, _ in out[:24]} == {7} and {t for t, _, _ in out[24:]} == {100}
    assert out[5][2] == 0 and out[10][2] == 8  # each face says which frame its embedding comes from


def test_clusters_and_dissimilarity_find_the_majority():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (10, 8)) + 1
    b = rng.normal(0, 0.05, (3, 8)) - 1
    emb = np.concatenate([b[:1], a, b[1:]]).astype(np.float32)
    labels = clusters(emb, 0.6)
    assert (labels[1:11] == 0).all() and (labels[[0, 11, 12]] == 1).all()
    d = dissimilarity(emb, 0.6)
    assert set(np.argsort(-d)[:3]) == {0, 11, 12}


@pytest.fixture(scope="module")
def people_ws(tmp_path_factory, media) -> Workspace:
    """src: the Obama photos, Biden and t1 (eight people), extracted with identities."""
    from facelab.stages.extract import ExtractOptions, extract

    ws = Workspace.at(tmp_path_factory.mktemp("people") / "workspace")
    ws.create_layout()
    for name in PHOTOS:
        shutil.copy(media(name), ws.frames_dir("src") / name)
    extract(ws, ExtractOptions(side="src", image_size=256))
    return ws


def _sources(folder: Path) -> list[str]:
    return [read_meta(p).source_filename for p in list_images(folder)]


def test_sort_by_face_puts_obama_together_and_split_gives_him_a_folder(people_ws, tmp_path, script):
    ws = copy_workspace(people_ws, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    proc = script("4.2_src_sort", *args, "--by", "face")
    assert proc.returncode == 0, proc.stderr
    order = _sources(ws.aligned_dir("src"))
    at = [i for i, s in enumerate(order) if s.startswith("obama")]
    assert len(order) == 10 and len(at) == 3 and at[-1] - at[0] == 2, order
    proc = script("4.2_src_util_split_identities", *args)
    assert proc.returncode == 0, proc.stderr
    assert "in 8 people" in proc.stderr
    assert sorted(_sources(ws.root / "data_src" / "aligned_person_1")) == ["obama.jpg", "obama2.jpg", "obama3.jpg"]
    assert len(list_images(ws.aligned_dir("src"))) == 10  # the faceset itself is unchanged
    info = script("4.2_src_util_faceset_info", *args)
    assert "identities: 8 people (faces each: 3, 1" in info.stdout and "warning: the src faceset holds 8 people" in info.stdout
    proc = script("4.2_src_sort", *args, "--by", "face-dissim")
    assert proc.returncode == 0, proc.stderr
    assert not _sources(ws.aligned_dir("src"))[0].startswith("obama")  # the majority comes last
    assert script("4.2_src_util_faceset_pack", *args).returncode == 0
    for name in ("4.2_src_util_split_identities", "4.2_src_util_add_identities"):
        proc = script(name, *args)
        assert proc.returncode == 2 and "unpack it first" in proc.stderr, proc.stderr


def test_extraction_with_a_reference_keeps_only_that_person(tmp_path, media, script):
    ws = Workspace.at(tmp_path / "ws")
    ws.create_layout()
    for k, name in enumerate(PHOTOS * 2):  # a frame sequence mixing Obama, Biden and t1's six people
        shutil.copy(media(name), ws.frames_dir("src") / f"{k:05d}{Path(name).suffix}")
    proc = script("4_src_faceset_extract", "--workspace", str(ws.root), "--non-interactive", "--image-size", "256",
                  "--reference", str(media("obama.jpg")))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kept = list_images(ws.aligned_dir("src"))
    assert len(kept) == 6  # 3 Obama photos, twice
    assert "kept 6 faces of the reference person, skipped 14 other faces; the person was not found in 4 of 10 frames" in proc.stdout
    frames = list_images(ws.frames_dir("src"))
    obama_frames = {f.name for k, f in enumerate(frames) if PHOTOS[k % 5].startswith("obama")}
    assert set(_sources(ws.aligned_dir("src"))) == obama_frames
    assert "not found in 4 frames" in proc.stderr


def test_reference_mistakes_are_one_line_and_change_nothing(people_ws, tmp_path, media, script):
    ws = copy_workspace(people_ws, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive", "--image-size", "256", "--overwrite")
    before = {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("src"))}
    proc = script("4_src_faceset_extract", *args, "--reference", str(tmp_path / "nobody.jpg"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "does not exist" in proc.stderr
    assert {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("src"))} == before
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8))
    proc = script("4_src_faceset_extract", *args, "--reference", str(noise))
    assert proc.returncode == 2 and "no face found in the reference" in proc.stderr and "Traceback" not in proc.stderr
    proc = script("4_src_faceset_extract", *args, "--reference", str(media("t1.jpg")))
    assert proc.returncode == 0 and "shows 6 faces: using the largest" in proc.stderr
    assert len(list_images(ws.aligned_dir("src"))) == 1  # the largest of t1's people, found in t1.jpg alone


def test_faces_without_identities_or_from_another_model_are_one_line(people_ws, tmp_path, script):
    from dataclasses import replace

    ws = copy_workspace(people_ws, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    for p in list_images(ws.aligned_dir("src")):
        write_meta(p, replace(read_meta(p), identity_model="dlib-resnet/v0"))
    before = {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("src"))}
    for name, extra in (("4.2_src_sort", ("--by", "face")), ("4.2_src_util_split_identities", ())):
        proc = script(name, *args, *extra)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "another model (dlib-resnet/v0)" in proc.stderr and "add-identities" in proc.stderr
    assert {p.name: p.read_bytes() for p in list_images(ws.aligned_dir("src"))} == before
    proc = script("4.2_src_util_add_identities", *args)
    assert proc.returncode == 0 and "added to 10 faces" in proc.stderr, proc.stderr
    assert script("4.2_src_sort", *args, "--by", "face").returncode == 0


def test_add_identities_works_on_dfl_made_faces(tmp_path, script, ws):
    from golden import GOLDEN

    source = GOLDEN / "dfljpg" / "modern_py311_numpy2"
    if not source.is_dir():
        pytest.skip("no DFL-made faces in the golden data")
    folder = ws.aligned_dir("src")
    for p in list_images(source):
        shutil.copy(p, folder / p.name)
    proc = script("4.2_src_util_add_identities", "--workspace", str(ws.root), "--non-interactive")
    assert proc.returncode == 0, proc.stderr
    metas = [read_meta(p) for p in list_images(folder)]
    assert metas and all(m.identity is not None and m.identity_model == "dlib-resnet/v1" for m in metas)


def _two_people_frames(media, folder: Path, count: int = 24) -> None:
    """carphone's man on the left, Obama on the right, in every frame."""
    obama = cv2.imread(str(media("obama.jpg")))
    cap = cv2.VideoCapture(str(media("carphone.mp4")))
    for i in range(count):
        ok, frame = cap.read()
        left = cv2.resize(frame, (704, 576))
        right = cv2.resize(obama, (int(obama.shape[1] * 576 / obama.shape[0]), 576))
        cv2.imwrite(str(folder / f"{i + 1:05d}.png"), np.concatenate([left, right], 1))


def test_merge_with_a_reference_swaps_only_that_person(train_workspace, tmp_path, media, script):
    ws = copy_workspace(train_workspace, tmp_path / "ws")
    args = ("--workspace", str(ws.root), "--non-interactive")
    assert script("6_train_SAEHD", *args, *TINY, "--target-iter", "2").returncode == 0
    shutil.rmtree(ws.frames_dir("dst"))
    ws.create_layout()
    _two_people_frames(media, ws.frames_dir("dst"))
    proc = script("5_dst_faceset_extract", *args, "--image-size", "256")
    assert proc.returncode == 0, proc.stderr
    assert len(list_images(ws.aligned_dir("dst"))) == 48
    reference = tmp_path / "man.png"  # one frame of the man, cut out of the video
    cv2.imwrite(str(reference), read_image(list_images(ws.frames_dir("dst"))[5])[:, :704])
    proc = script("7_merge_SAEHD", *args, "--mask-mode", "dst", "--reference", str(reference))
    assert proc.returncode == 0, proc.stderr
    assert "24 frames merged (24 faces" in proc.stdout
    for frame in list_images(ws.frames_dir("dst")):
        before, after = read_image(frame), read_image(ws.merged_dir / frame.name)
        assert np.array_equal(before[:, 704:], after[:, 704:]), frame.name  # Obama's side: identical
        assert np.abs(before[:, :704].astype(int) - after[:, :704]).mean() > 0.5, frame.name  # the man: swapped
    proc = script("7_merge_SAEHD", *args, "--mask-mode", "dst", "--person", "3")
    assert proc.returncode == 2 and "holds 2 people" in proc.stderr
