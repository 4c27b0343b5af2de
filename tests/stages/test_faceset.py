"""Faceset utilities (scripts 4.2 / 5.2 util) on faces extracted from the real test media."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab import cli
from facelab.core.landmarks import FaceType, transform_points
from facelab.io.faceimage import XSegPolygon, read_face, read_meta, write_face
from facelab.io.faceset import PACK_NAME, load_faceset
from facelab.io.frames import list_images, read_image
from facelab.stages.extract import ExtractOptions, extract
from facelab.workspace import Workspace


@pytest.fixture(scope="module")
def base_faceset(tmp_path_factory, media) -> Path:
    ws = Workspace.at(tmp_path_factory.mktemp("fs") / "workspace")
    ws.create_layout()
    for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "t1.jpg"):
        shutil.copy(media(name), ws.frames_dir("src") / name)
    extract(ws, ExtractOptions(side="src", image_size=256))
    folder = ws.aligned_dir("src")
    # labels on two faces: polygons on one, an applied mask on another
    path = folder / "obama_0.jpg"
    img, meta = read_face(path)
    hull = cv2.convexHull(meta.landmarks.astype(np.float32))[:, 0]
    write_face(path, img, replace(meta, xseg_polygons=(XSegPolygon(True, hull), XSegPolygon(False, np.float32([[100, 170], [160, 170], [160, 200], [100, 200]])))))
    path = folder / "biden_0.jpg"
    img, meta = read_face(path)
    mask = np.zeros((256, 256), np.float32)
    cv2.fillConvexPoly(mask, cv2.convexHull(meta.landmarks.astype(np.int32)), 1.0)
    write_face(path, img, meta.with_xseg_mask(mask))
    return folder


@pytest.fixture
def faceset(base_faceset, tmp_path) -> Path:
    folder = tmp_path / "aligned"
    shutil.copytree(base_faceset, folder)
    return folder


def _run(action: str, folder: Path, *flags: str) -> int:
    return cli.main(["faceset", action, str(folder), "--non-interactive", *flags])


def _metas(folder: Path) -> dict[str, dict]:
    return {p.name: read_meta(p).to_dict() for p in list_images(folder)}


def test_metadata_survives_an_external_editor(faceset):
    before = _metas(faceset)
    shapes = {p.name: read_image(p).shape for p in list_images(faceset)}
    assert _run("metadata-save", faceset) == 0
    for p in list_images(faceset):  # an editor: re-encode without metadata, at another size
        img = read_image(p)
        cv2.imwrite(str(p), cv2.resize(img, (200, 200)), [cv2.IMWRITE_JPEG_QUALITY, 92])
        assert read_meta(p) is None
    assert _run("metadata-restore", faceset) == 0
    assert _metas(faceset) == before
    assert all(read_image(p).shape == shapes[p.name] for p in list_images(faceset))


def test_metadata_restore_can_keep_the_edited_size(faceset):
    before = {p.name: read_meta(p) for p in list_images(faceset)}
    assert _run("metadata-save", faceset) == 0
    for p in list_images(faceset):
        cv2.imwrite(str(p), cv2.resize(read_image(p), (128, 128)))
    assert _run("metadata-restore", faceset, "--keep-size") == 0
    for p in list_images(faceset):
        meta = read_meta(p)
        np.testing.assert_allclose(meta.landmarks, before[p.name].landmarks * 0.5, atol=1e-4)
        # the scaled matrix still maps the frame landmarks onto the scaled aligned landmarks
        np.testing.assert_allclose(transform_points(meta.source_landmarks, meta.image_to_face_mat), meta.landmarks, atol=0.05)
        assert read_image(p).shape == (128, 128, 3)


def test_pack_unpack_round_trip_is_byte_identical(faceset):
    files = {p.name: p.read_bytes() for p in list_images(faceset)}
    metas = _metas(faceset)
    assert _run("pack", faceset) == 0
    assert list_images(faceset) == [] and (faceset / PACK_NAME).exists()
    packed = load_faceset(faceset)  # what training reads
    assert {f.name: f.meta.to_dict() for f in packed} == metas
    assert {f.name: f.read_bytes() for f in packed} == files
    assert _run("unpack", faceset) == 0
    assert {p.name: p.read_bytes() for p in list_images(faceset)} == files
    assert not (faceset / PACK_NAME).exists()


def test_a_tampered_pack_is_refused_clearly(faceset):
    assert _run("pack", faceset) == 0
    pack = faceset / PACK_NAME
    data = bytearray(pack.read_bytes())
    data[len(data) // 3] ^= 0xFF  # one flipped byte inside a face
    pack.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "facelab", "faceset", "unpack", str(faceset)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "is damaged" in proc.stderr and "Traceback" not in proc.stderr
    assert list_images(faceset) == [] and pack.exists()  # nothing half-unpacked, the pack kept


def test_resize_same_type_scales_everything(faceset):
    assert _run("resize", faceset, "--image-size", "128", "--face-type", "same") == 0
    out = faceset.parent / "aligned_resized"
    for p in list_images(faceset):
        src = read_meta(p)
        img, meta = read_face(out / p.name)
        assert img.shape == (128, 128, 3)
        np.testing.assert_allclose(meta.landmarks, src.landmarks * 0.5, atol=1e-3)
        np.testing.assert_allclose(transform_points(meta.source_landmarks, meta.image_to_face_mat), meta.landmarks, atol=0.05)
    masked = read_meta(out / "biden_0.jpg").xseg_mask()
    assert masked.shape == (128, 128, 1) and 0.1 < masked.mean() < 0.9
    polys = read_meta(out / "obama_0.jpg").xseg_polygons
    np.testing.assert_allclose(polys[0].points, read_meta(faceset / "obama_0.jpg").xseg_polygons[0].points * 0.5, atol=1e-3)


def test_resize_to_another_face_type_reframes_through_the_source(faceset):
    assert _run("resize", faceset, "--image-size", "256", "--face-type", "f") == 0
    out = faceset.parent / "aligned_resized"
    for p in list_images(out):
        img, meta = read_face(out / p.name)
        assert meta.face_type is FaceType.FULL
        np.testing.assert_allclose(transform_points(meta.source_landmarks, meta.image_to_face_mat), meta.landmarks, atol=0.05)
        # a full face is a tighter crop: the face fills more of the image than in whole_face
        src = read_meta(faceset / p.name)
        assert np.ptp(meta.landmarks[:, 0]) > 1.2 * np.ptp(src.landmarks[:, 0])


def test_export_masks_landmarks_debug_and_recover_names(faceset):
    assert _run("export-masks", faceset) == 0
    masks = {p.name: cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in list_images(faceset.parent / "aligned_masks")}
    assert sorted(masks) == ["biden_0.png", "obama_0.png"]
    obama = masks["obama_0.png"]
    assert obama[185, 130] == 0 and obama[128, 128] == 255  # the excluded box over the mouth is cut out
    assert _run("add-landmarks-debug", faceset) == 0
    assert len(list_images(faceset.parent / "aligned_landmarks")) == len(list_images(faceset))
    names = sorted(p.name for p in list_images(faceset))
    for i, p in enumerate(list_images(faceset)):
        p.rename(faceset / f"{i:05d}.jpg")  # as a sort leaves them
    assert _run("recover-filenames", faceset) == 0
    assert sorted(p.name for p in list_images(faceset)) == names


def test_info_reports_coverage_and_writes_pictures(faceset, capsys):
    assert _run("info", faceset) == 0
    out, err = capsys.readouterr()
    assert "faces: 9 with metadata" in out and "whole_face 9" in out
    assert "XSeg: 1 faces with drawn polygons, 1 with an applied mask" in out
    assert "yaw coverage" in out and "<- missing" in out
    sheet = read_image(faceset.parent / "aligned_info" / "contact_sheet.png")
    plot = read_image(faceset.parent / "aligned_info" / "yaw_pitch.png")
    assert sheet.shape == (96, 9 * 96, 3) and sheet.std() > 20
    assert plot is not None and "9 faces in" in err


def test_bad_metadata_file_and_packed_sort_are_clear(faceset):
    for bad in ("{not json", "[1, 2]", '{"faces": ' + "[" * 100_000 + "]" * 100_000 + "}", '{"faces": [1]}'):
        (faceset / "facelab_meta.json").write_text(bad)
        assert _run("metadata-restore", faceset) == 2, bad[:20]
    assert _run("pack", faceset) == 0
    assert cli.main(["sort", "--input-dir", str(faceset), "--by", "blur", "--non-interactive"]) == 2


@pytest.mark.parametrize("bad", ["../outside.jpg", "/tmp/outside.jpg", "C:outside.jpg", "outside.jpg:ads", "CON.jpg",
                                 "sub\\outside.jpg", "..", "x.jpg "])  # fmt: skip
def test_metadata_restore_refuses_names_that_leave_the_folder(faceset, bad, capsys):
    """A crafted facelab_meta.json must not resize or rewrite an image anywhere else on disk."""
    import json

    victim = faceset.parent / "outside.jpg"
    shutil.copy(list_images(faceset)[0], victim)
    before = victim.read_bytes()
    assert _run("metadata-save", faceset) == 0
    saved = json.loads((faceset / "facelab_meta.json").read_text())
    first = next(iter(saved["faces"].values()))
    saved["faces"][bad] = {**first, "shape": [64, 64]}
    (faceset / "facelab_meta.json").write_text(json.dumps(saved))
    faces_before = {p.name: p.read_bytes() for p in list_images(faceset)}
    capsys.readouterr()
    assert _run("metadata-restore", faceset) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a" in err and "Traceback" not in err
    assert victim.read_bytes() == before
    assert {p.name: p.read_bytes() for p in list_images(faceset)} == faces_before  # nothing changed inside either


@pytest.mark.parametrize("name", ["C:x.jpg", "x.jpg:ads", "CON.jpg", "aux.png", "a/b.jpg", "..", "", "x.jpg."])
def test_plain_file_name_refuses_what_windows_or_linux_would_read_as_a_path(name):
    from facelab.io.names import UnsafeName, plain_file_name

    with pytest.raises(UnsafeName):
        plain_file_name(name, "test")
    assert plain_file_name("00001_0.jpg", "test") == "00001_0.jpg"
