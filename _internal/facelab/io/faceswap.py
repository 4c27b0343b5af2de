"""faceswap's extraction output, read safely: the alignments file (`.fsa`) and extracted face PNGs.

Formats as `../shared/reference/faceswap-golden/README.md` observes them:
- `.fsa`: one zlib stream holding a pickle (protocol 4) of `{"__meta__": {"version": 2.4},
  "__data__": {frame name: {"faces": [face, ...], "video_meta": {...}}}}`. A face holds its
  detector box (`x, y, w, h`), `landmarks_xy` (68 x 2 frame pixels; numpy float32 in faceswap 2.x
  and 3, plain lists in the newest), and `mask`: name -> {`mask` (zlib bytes of a stored_size^2
  uint8 image), `affine_matrix` (frame -> stored mask; 2x3, or 3x3 in the newest), `interpolator`,
  `stored_size`, `stored_centering`}. It is read through the same allow-list unpickler as DFL's
  files (numpy's array reconstruction only); any other global is refused before it can run.
- Face PNGs: one `iTXt` chunk, keyword `faceswap`, holding the `repr` of
  `{"alignments": face, "source": {...}}`: parsed with `ast.literal_eval`, never `eval`.

Everything is bounded (file and decompressed sizes, values, mask sides) and checked (68 finite
points, invertible matrices, masks of the size they claim); a malformed file is one
`FaceMetaError` naming it. Identity embeddings and thumbnails are not read: they belong to
faceswap's own models and GUI.
"""

from __future__ import annotations

import ast
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facelab.core.landmarks import umeyama
from facelab.core.masks import LANDMARK_MASKS  # faceswap's landmark masks, drawn by FaceLab too
from facelab.io.faceimage import MAX_META_BYTES, FaceMetaError, load_dfl_pickle, read_png_text
from facelab.io.names import UnsafeName, plain_file_name

MAX_FSA_BYTES = 1 << 30  # a long video's alignments with thumbnails: hundreds of MB at most
MAX_FSA_INFLATED = 2 << 30
MAX_FSA_ITEMS = 1 << 26
MAX_MASK_SIDE = 1024  # faceswap stores 128 (its masks' own size options stop well below this)


@dataclass(frozen=True, eq=False)
class FsMask:
    """One mask faceswap stored for a face.

    Attributes:
        name: faceswap's mask name ("components", "extended", "bisenet-fp_face", "custom_face", ...).
        mask_u8: stored_size x stored_size uint8, 0-255.
        mat_frame_to_mask: 2 x 3 float64, frame pixels -> stored mask pixels.
        interpolator: the OpenCV flag faceswap warps the mask back with.
        centering: "face", "head" or "legacy".
    """

    name: str
    mask_u8: np.ndarray
    mat_frame_to_mask: np.ndarray
    interpolator: int
    centering: str

    def is_empty(self) -> bool:
        return not self.mask_u8.any()


@dataclass(frozen=True, eq=False)
class FsFace:
    """One face of faceswap's alignments: its frame, index in that frame, box and landmarks.

    Attributes:
        frame: the frame's file name ("shared_011.jpg").
        index: the face's position in the frame's list (faceswap's file names end in it).
        box_xywh: the detector box in frame pixels.
        landmarks: 68 x 2 float32 frame pixels, iBUG-68 order.
        masks: the stored masks, in the file's order.
    """

    frame: str
    index: int
    box_xywh: tuple[int, int, int, int]
    landmarks: np.ndarray
    masks: tuple[FsMask, ...]

    def mask(self, name: str) -> FsMask | None:
        return next((m for m in self.masks if m.name == name), None)


def read_alignments(path: Path) -> dict[str, list[FsFace]]:
    """faceswap's `.fsa` -> {frame name: faces}, frames without faces included (as []).

    Raises FaceMetaError (one line, naming the file) for anything damaged or refused."""
    path = Path(path)
    name = path.name
    size = path.stat().st_size
    if size > MAX_FSA_BYTES:
        raise FaceMetaError(f"{path} is {size >> 20} MB: more than an alignments file holds ({MAX_FSA_BYTES >> 20} MB)")
    raw = path.read_bytes()
    if not raw.startswith(b"\x78"):
        hint = " (faceswap's older .json / .yaml alignments: open and save them in a current faceswap first)"
        raise FaceMetaError(f"{path} is not a faceswap alignments file: it is not zlib-compressed{hint if raw[:1] in b'{-' else ''}")
    try:
        inflater = zlib.decompressobj()
        payload = inflater.decompress(raw, MAX_FSA_INFLATED)
        if inflater.unconsumed_tail:
            raise FaceMetaError(f"{path} expands to more than {MAX_FSA_INFLATED >> 30} GB")
    except zlib.error as exc:
        raise FaceMetaError(f"{path} is damaged: its compressed data is broken ({exc})") from None
    try:
        data = load_dfl_pickle(payload, name, max_items=MAX_FSA_ITEMS)
    except FaceMetaError as exc:  # the unpickler speaks of DFL, whose files it was written for
        raise FaceMetaError(str(exc).replace("DFL metadata", "alignments data")) from None
    if not isinstance(data, dict) or not isinstance(data.get("__data__"), dict):
        raise FaceMetaError(f"{path} is not a faceswap alignments file (no __data__ table inside)")
    frames: dict[str, list[FsFace]] = {}
    for frame, entry in data["__data__"].items():
        try:
            frame = plain_file_name(frame, name)
        except UnsafeName as exc:
            raise FaceMetaError(str(exc)) from None
        faces = entry.get("faces") if isinstance(entry, dict) else None
        if not isinstance(faces, list):
            raise FaceMetaError(f"{name}: frame {frame!r} has no list of faces")
        frames[frame] = [fs_face(raw_face, frame, i, f"{name}: {frame} face {i}") for i, raw_face in enumerate(faces)]
    return frames


def face_from_png_bytes(data: bytes, name: str) -> FsFace:
    """A faceswap face PNG's embedded alignment (FaceMetaError when it has none, or it is damaged)."""
    try:
        text = read_png_text(data, b"faceswap")
    except FaceMetaError as exc:
        raise FaceMetaError(f"{name}: {exc}") from None
    except (ValueError, IndexError) as exc:
        raise FaceMetaError(f"{name}: damaged PNG chunks ({exc})") from None
    if text is None:
        raise FaceMetaError(f"{name} holds no faceswap metadata (not a face faceswap extracted)")
    if len(text) > MAX_META_BYTES:
        raise FaceMetaError(f"{name}: faceswap metadata larger than {MAX_META_BYTES >> 20} MB")
    try:
        meta = ast.literal_eval(text.decode("utf-8"))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError, UnicodeDecodeError) as exc:
        raise FaceMetaError(f"{name}: faceswap metadata is damaged ({type(exc).__name__})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("alignments"), dict):
        raise FaceMetaError(f"{name}: faceswap metadata has no alignments")
    source = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    frame = source.get("source_filename")
    try:
        frame = plain_file_name(frame, name) if frame is not None else Path(name).stem + ".png"
    except UnsafeName as exc:
        raise FaceMetaError(str(exc)) from None
    index = source.get("face_index", 0)
    index = index if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < 10_000 else 0
    return fs_face(meta["alignments"], frame, index, name)


def fs_face(raw: Any, frame: str, index: int, where: str) -> FsFace:
    """One face dict of faceswap's (from the `.fsa` or a PNG), checked."""
    if not isinstance(raw, dict):
        raise FaceMetaError(f"{where}: a face is not a table")
    points = raw.get("landmarks_xy", raw.get("landmarksXY"))
    try:
        lm = np.array(points, np.float64)
    except (TypeError, ValueError):
        lm = np.zeros(0)
    if lm.shape != (68, 2) or not np.isfinite(lm).all() or np.abs(lm).max() > 1e6:
        raise FaceMetaError(f"{where}: landmarks are not 68 finite (x, y) points (shape {lm.shape})")
    box = tuple(raw.get(k, 0) for k in ("x", "y", "w", "h"))
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and abs(v) < 1 << 20 for v in box):
        raise FaceMetaError(f"{where}: its box x, y, w, h is not four whole numbers")
    masks_raw = raw.get("mask") or {}
    if not isinstance(masks_raw, dict) or len(masks_raw) > 64:
        raise FaceMetaError(f"{where}: its masks are not a table of at most 64 masks")
    masks = tuple(_mask(str(mname)[:100], m, f"{where} mask {str(mname)[:40]!r}") for mname, m in masks_raw.items())
    return FsFace(frame, index, tuple(int(v) for v in box), lm.astype(np.float32), masks)  # type: ignore[arg-type]


def _mask(name: str, raw: Any, where: str) -> FsMask:
    if not isinstance(raw, dict):
        raise FaceMetaError(f"{where}: not a table")
    side = raw.get("stored_size")
    if not isinstance(side, int) or isinstance(side, bool) or not 0 < side <= MAX_MASK_SIDE:
        raise FaceMetaError(f"{where}: stored_size {str(side)[:20]!r} is not a side of 1-{MAX_MASK_SIDE} px")
    blob = raw.get("mask")
    if not isinstance(blob, bytes):
        raise FaceMetaError(f"{where}: the mask is not bytes")
    try:
        inflater = zlib.decompressobj()
        pixels = inflater.decompress(blob, side * side + 1)
    except zlib.error:
        raise FaceMetaError(f"{where}: the mask's compressed data is broken") from None
    if len(pixels) != side * side:
        raise FaceMetaError(f"{where}: the mask does not hold {side} x {side} pixels")
    try:
        mat = np.array(raw.get("affine_matrix"), np.float64)
    except (TypeError, ValueError):
        mat = np.zeros(0)
    if mat.shape == (3, 3):
        if not np.allclose(mat[2], (0, 0, 1), atol=1e-6):
            raise FaceMetaError(f"{where}: its 3 x 3 matrix is not affine")
        mat = mat[:2]
    if mat.shape != (2, 3) or not np.isfinite(mat).all() or abs(np.linalg.det(mat[:, :2])) < 1e-12:
        raise FaceMetaError(f"{where}: its matrix is not an invertible 2 x 3 affine")
    interp = raw.get("interpolator", cv2.INTER_LINEAR)
    interp = interp if isinstance(interp, int) and interp in (0, 1, 2, 3, 4) else cv2.INTER_LINEAR
    centering = raw.get("stored_centering", "face")
    centering = centering if centering in ("face", "head", "legacy") else "face"
    return FsMask(name, np.frombuffer(pixels, np.uint8).reshape(side, side), mat, interp, centering)


# dlib's mean face shape (points 17-67, unit square; dlib's get_face_chip_details, Boost licence;
# DFL's `landmarks_2D`), moved right by 0.5 - 0.490127 so that its centre line is x = 0.5: the
# target of faceswap's "legacy" alignment (on faceswap's reference faces this reproduces its
# legacy matrices to 2e-7 relative in rotation and scale and 6e-7 in translation).
_MEAN_X = [0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
           0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
           0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
           0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
           0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
           0.42689]  # fmt: skip
_MEAN_Y = [0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
           0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
           0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
           0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
           0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
           0.831803, 0.824182]  # fmt: skip
MEAN_FACE_51 = np.stack([np.array(_MEAN_X) + (0.5 - 0.490127), _MEAN_Y], 1)


def legacy_matrix(landmarks: np.ndarray) -> np.ndarray:
    """faceswap's legacy alignment: frame pixels -> its unit face square (2 x 3), a similarity
    fitted to points 17-67. faceswap's crops shift it by a head-pose offset and scale it:
    frame -> crop = (legacy - offset) x (size - 2 padding) + padding."""
    return umeyama(np.asarray(landmarks, np.float64)[17:], MEAN_FACE_51, True)[:2]


def choose_mask(face: FsFace, wanted: str) -> FsMask | None:
    """The stored mask to apply: `wanted` by name, or with "auto" a learned mask that is not
    empty (bisenet-fp, vgg, unet-dfl, custom...; by name) before `extended` before `components`.
    An all-zero mask (faceswap's unpainted `custom`) is never chosen by auto."""
    if wanted != "auto":
        return face.mask(wanted)
    learned = sorted((m for m in face.masks if m.name not in LANDMARK_MASKS and not m.is_empty()), key=lambda m: m.name)
    if learned:
        return learned[0]
    return face.mask("extended") or face.mask("components")
