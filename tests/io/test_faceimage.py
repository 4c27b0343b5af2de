"""Aligned-face metadata: our JSON format, and DFL's DFLJPG read safely (dfl-golden/dfljpg)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import struct

import cv2
import numpy as np
import pytest

from facelab.core.landmarks import FaceType
from facelab.core.masks import polygons_mask
from facelab.io import faceimage as fi
from facelab.io.frames import read_image
from golden import golden


def _meta(**kw) -> fi.FaceMeta:
    rng = np.random.default_rng(1)
    base = dict(
        face_type=FaceType.WHOLE_FACE,
        landmarks=rng.uniform(0, 512, (68, 2)).astype(np.float32),
        source_filename="00007.png",
        source_rect=np.array([10, 20, 200, 210], np.float64),
        source_landmarks=rng.uniform(0, 720, (68, 2)).astype(np.float32),
        image_to_face_mat=rng.normal(size=(2, 3)),
        xseg_polygons=(fi.XSegPolygon(True, rng.uniform(0, 512, (12, 2)).astype(np.float32)),
                       fi.XSegPolygon(False, rng.uniform(0, 512, (4, 2)).astype(np.float32))),
        track_id=3,
        extra={"detector": "blazeface", "score": 0.97},
    )  # fmt: skip
    base.update(kw)
    return fi.FaceMeta(**base)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_round_trip_keeps_every_field_exactly(tmp_path, ext):
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((512, 512), np.float32)
    mask[100:300, 50:400] = 1.0
    meta = _meta().with_xseg_mask(mask)
    path = tmp_path / f"00007_0{ext}"
    fi.write_face(path, img, meta)
    back_img, back = fi.read_face(path)
    assert back is not None
    assert back.to_dict() == meta.to_dict()
    assert back.landmarks.dtype == np.float32 and np.array_equal(back.landmarks, meta.landmarks)
    assert np.array_equal(back.xseg_mask()[..., 0], mask)  # lossless, full size
    if ext == ".png":
        assert np.array_equal(back_img, img)
    assert back_img.shape == img.shape


def test_large_metadata_is_split_across_segments(tmp_path):
    noisy = np.random.default_rng(2).uniform(0, 1, (512, 512)).astype(np.float32)  # ~250 KB PNG
    meta = _meta().with_xseg_mask(noisy)
    path = tmp_path / "big.jpg"
    fi.write_face(path, np.zeros((32, 32, 3), np.uint8), meta)
    data = path.read_bytes()
    assert data.count(b"\xff\xea") >= 4 and data.count(b"FaceLab\x00") >= 4
    back = fi.read_meta(path)
    assert back is not None and back.xseg_mask_png == meta.xseg_mask_png
    assert read_image(path) is not None  # still a normal JPEG for every viewer


def test_rewriting_metadata_keeps_pixels_and_replaces_segments(tmp_path):
    path = tmp_path / "f.jpg"
    fi.write_face(path, np.full((32, 32, 3), 128, np.uint8), _meta())
    before = read_image(path)
    fi.write_meta(path, _meta(track_id=9))
    fi.write_meta(path, _meta(track_id=10))
    assert fi.read_meta(path).track_id == 10
    assert path.read_bytes().count(b"FaceLab\x00") == 1
    assert np.array_equal(read_image(path), before)


def test_plain_image_has_no_metadata(tmp_path):
    path = tmp_path / "plain.jpg"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    assert fi.read_meta(path) is None


def test_newer_schema_is_refused_clearly():
    d = _meta().to_dict()
    d["version"] = 99
    with pytest.raises(fi.FaceMetaError, match="newer than this FaceLab reads"):
        fi.FaceMeta.from_dict(d)


@pytest.mark.parametrize("variant", ["legacy_py36_numpy119", "modern_py311_numpy2"])
def test_dfl_written_faces_are_read_exactly(variant):
    folder = golden(f"dfljpg/{variant}")
    expected = json.loads((folder / "expected.json").read_text())["files"]
    masks = np.load(folder / "expected_masks.npz")
    for name, rec in expected.items():
        path = folder / name
        meta = fi.read_meta(path)
        d = rec["dfl_dict"]
        assert meta is not None, name
        assert meta.face_type.dfl_name == d["face_type"]
        assert meta.source_filename == d["source_filename"]
        np.testing.assert_array_equal(meta.landmarks, np.float32(d["landmarks"]))
        np.testing.assert_array_equal(meta.source_landmarks, np.float32(d["source_landmarks"]))
        np.testing.assert_array_equal(meta.source_rect, np.asarray(d["source_rect"]["data"], np.float64))
        if "image_to_face_mat" in d:
            np.testing.assert_array_equal(meta.image_to_face_mat, np.asarray(d["image_to_face_mat"]["data"]))
        else:
            assert meta.image_to_face_mat is None and meta.face_type is FaceType.MARK_ONLY
        assert meta.eyebrows_expand_mod == float(d.get("eyebrows_expand_mod", 1.0))
        stem = name[:-4]
        h, w = rec["decoded_shape"][:2]
        if f"{stem}__xseg_mask_uint8" in masks.files:
            want = masks[f"{stem}__xseg_mask_uint8"]
            got = np.rint(meta.xseg_mask()[..., 0] * 255).astype(np.uint8)
            assert got.shape == want.shape
            if d["xseg_mask"]["encoded_format"] == "png":
                assert hashlib.sha256(got.tobytes()).hexdigest() == d["xseg_mask"]["decoded_sha256"]
            else:  # a JPEG mask: decoders may differ by a few levels
                assert np.abs(got.astype(int) - want.astype(int)).max() <= 4
        if f"{stem}__polys_overlay_mask" in masks.files:
            assert [int(p.include) for p in sorted(meta.xseg_polygons, key=lambda p: not p.include)] == rec[
                "seg_ie_polys_after_load_sort_types"
            ]
            raster = polygons_mask((h, w), [(p.include, p.points) for p in meta.xseg_polygons]).astype(np.uint8)
            np.testing.assert_array_equal(raster, masks[f"{stem}__polys_overlay_mask"])
            assert int(raster.sum()) == rec["polys_overlay_mask_sum"]
        img = read_image(path)
        assert img.shape == tuple(rec["decoded_shape"])
        np.testing.assert_allclose(img.reshape(-1, 3).mean(axis=0), rec["decoded_mean_bgr"], atol=0.5)


def test_dfl_face_resaved_in_our_format_drops_the_pickle(tmp_path):
    src = golden("dfljpg/legacy_py36_numpy119/03_head512_polys.jpg")
    meta = fi.read_meta(src)
    out = tmp_path / "f.jpg"
    out.write_bytes(src.read_bytes())
    fi.write_meta(out, meta)
    assert b"\xff\xef" not in out.read_bytes()[:2000]  # no APP15 left near the header
    assert fi.read_meta(out).to_dict() == meta.to_dict()


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _jpeg_with_app15(payload: bytes) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = buf.tobytes()
    return data[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_malicious_dfljpg_is_refused_and_nothing_runs(tmp_path):
    sentinel = tmp_path / "pwned.txt"
    payload = pickle.dumps({"landmarks": [[0, 0]] * 68, "x": _Evil(str(sentinel))})
    path = tmp_path / "evil.jpg"
    path.write_bytes(_jpeg_with_app15(payload))
    with pytest.raises(fi.FaceMetaError, match=r"refused DFL metadata that asks for (io|builtins)\.open.*nothing was executed"):
        fi.read_meta(path)
    assert not sentinel.exists()
    # os.system through a hand-written protocol-0 pickle
    evil = b"cos\nsystem\n(S'touch " + str(sentinel).encode() + b"'\ntR."
    path.write_bytes(_jpeg_with_app15(evil))
    with pytest.raises(fi.FaceMetaError, match=r"os\.system"):
        fi.read_meta(path)
    assert not sentinel.exists()


def test_damaged_dfl_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(_jpeg_with_app15(b"\x80\x04\x95garbage"))
    with pytest.raises(fi.FaceMetaError, match="damaged"):
        fi.read_meta(path)


def test_png_text_chunk_round_trip():
    ok, buf = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))
    data = fi.embed_png_text(buf.tobytes(), b"synthetic", b"true")
    assert fi.read_png_text(data, b"synthetic") == b"true"
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (4, 4, 3)
    assert io.BytesIO(data).read(8) == b"\x89PNG\r\n\x1a\n"
