"""Hostile and broken face files, made from a real face (tests/io/test_hostile.py and the
1,000-face test use them)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import struct
import zlib

from facelab.io import faceimage as fi


def _app15(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xef" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _png_with_text(png: bytes, body: bytes) -> bytes:
    """`png` with an iTXt chunk whose body is `body` as it is (broken on purpose)."""
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body) & 0xFFFFFFFF)
    return png[:33] + chunk + png[33:]


def _claims_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF header claiming another size."""
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + struct.pack(">HH", height, width) + jpeg[at + 9 :]


def _bomb_pickle() -> bytes:
    value: list = [0.0] * 100
    for _ in range(5):
        value = [value] * 100  # 100^6 values, each list pickled once and then referenced
    return pickle.dumps({"landmarks": value, "face_type": "full_face"}, protocol=2)


def crafted_faces(good_jpg: bytes, good_png: bytes) -> dict[str, bytes]:
    """name -> bytes of each hostile or broken face."""
    meta = fi.meta_from_bytes(good_jpg)
    d = meta.to_dict()
    plain_jpg = fi._embed_jpeg(good_jpg, b"")  # the pixels with an empty piece of ours
    emb = lambda data: fi._embed_jpeg(good_jpg, json.dumps(data).encode())  # noqa: E731
    at = good_jpg.index(b"FaceLab\x00")
    big_mask = good_png[:16] + struct.pack(">II", 30000, 30000) + good_png[24:]
    return {
        "truncated_app.jpg": good_jpg[: at + 40],
        "json_is_a_list.jpg": emb([1, 2, 3]),
        "landmarks_67.jpg": emb({**d, "landmarks": d["landmarks"][:67]}),
        "landmarks_nan.jpg": fi._embed_jpeg(good_jpg, json.dumps({**d, "landmarks": [[float("nan"), 1.0]] * 68}).encode()),
        "landmarks_text.jpg": emb({**d, "landmarks": [["a", "b"]] * 68}),
        "landmarks_ragged.jpg": emb({**d, "landmarks": [[1, 2], [3]] * 34}),
        "matrix_wrong.jpg": emb({**d, "image_to_face_mat": [[1, 0, 0]]}),
        "track_is_text.jpg": emb({**d, "track_id": "one"}),
        "deep.jpg": fi._embed_jpeg(good_jpg, b'{"extra": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        "broken_chunk.png": _png_with_text(good_png, b"facelab"),
        "zlib_bomb.png": _png_with_text(good_png, b"facelab\x00\x01\x00\x00\x00" + zlib.compress(b"{" + b" " * (64 << 20), 9)),
        "pickle_bomb.jpg": _app15(plain_jpg, _bomb_pickle()),
        "huge_mask.jpg": emb({**d, "xseg_mask_png": base64.b64encode(big_mask).decode()}),
        "huge_face.jpg": _claims_size(good_jpg, 30000, 30000),
        "not_an_image.jpg": b"\xff\xd8" + os.urandom(300),
    }
