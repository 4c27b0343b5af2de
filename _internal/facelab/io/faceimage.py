"""Aligned face images: pixels plus embedded, schema-versioned JSON metadata (never pickle).

Our format (ARCHITECTURE.md §4):
- JPEG: APP10 segments whose payload is `FaceLab\\0`, a sequence byte, a count byte, then a
  piece of the UTF-8 JSON; metadata larger than one segment (64 KB) is split across several.
  APP10 keeps clear of DFL's APP15, EXIF (APP1), Photoshop (APP13), Adobe (APP14) and JUMBF/C2PA
  (APP11).
- PNG: one `iTXt` chunk with keyword `facelab` (zlib-compressed when large).
- Applied XSeg masks are stored losslessly as PNG bytes (base64 in the JSON), at any size.

DFL's own faces (DFLJPG, dfl-spec §3) keep a pickled dict in APP15. We read it through an
allow-list unpickler that accepts only numpy's array reconstruction (`_reconstruct`, `ndarray`,
`dtype`, `scalar`) and plain containers; any other global is refused before anything runs. On
write we drop APP15, so a face we saved is never read by DFL with stale data.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import struct
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from facelab.core.landmarks import FaceType
from facelab.errors import UserError
from facelab.io.frames import decode_image, encode_image, read_image, write_bytes_atomic
from facelab.types import ImageBGR

SCHEMA = "facelab.face"
SCHEMA_VERSION = 1

_APP10 = 0xEA
_APP15 = 0xEF
_SOS = 0xDA
_JPEG_ID = b"FaceLab\x00"
_MAX_PIECE = 65535 - 2 - len(_JPEG_ID) - 2
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEYWORD = b"facelab"

# What a reader allocates at most for one face, whatever its file claims (a shared faceset is
# untrusted input): the metadata after decompression, a face or mask side, polygons and their
# points, the values a DFL pickle may expand to (shared sub-lists count every time), its depth.
MAX_META_BYTES = 16 << 20
MAX_SIDE = 4096
MAX_POLYGONS = 512
MAX_POINTS = 1 << 16
MAX_IDENTITY = 4096
MAX_PICKLE_ITEMS = 1 << 20
MAX_PICKLE_DEPTH = 32
_DAMAGE = (struct.error, IndexError, ValueError, TypeError, KeyError, AttributeError, RecursionError, OverflowError,
           zlib.error, UnicodeDecodeError)  # fmt: skip


class FaceMetaError(UserError):
    """A face image's metadata is unreadable or refused (e.g. a pickle asking for code)."""


@dataclass(frozen=True)
class XSegPolygon:
    """One hand-drawn XSeg polygon in aligned-face pixels."""

    include: bool
    points: np.ndarray  # N x 2 float32


@dataclass(frozen=True, eq=False)
class FaceMeta:
    """Everything known about one aligned face.

    Attributes:
        face_type: framing of the crop.
        landmarks: 68 x 2 float32 in aligned-image pixels (frame pixels for mark_only).
        source_filename: the frame it came from, with extension ("00001.png").
        source_rect: detector box in the frame, (l, t, r, b).
        source_landmarks: 68 x 2 float32 in frame pixels.
        image_to_face_mat: 2 x 3 float64, frame -> aligned image (None for mark_only).
        eyebrows_expand_mod: how far the hull mask reaches above the brows (DFL default 1.0).
        xseg_polygons: hand-drawn include/exclude polygons.
        xseg_mask_png: applied XSeg mask, single-channel PNG bytes.
        identity: an identity embedding, when a plugin computed one.
        identity_model: which model made it ("dlib-resnet/v1"): embeddings of two models are
            never compared.
        track_id: which track (person) of a video the face belongs to.
        extra: other JSON-safe fields (detector name, score, ...); kept on round trips.
    """

    face_type: FaceType
    landmarks: np.ndarray
    source_filename: str | None = None
    source_rect: np.ndarray | None = None
    source_landmarks: np.ndarray | None = None
    image_to_face_mat: np.ndarray | None = None
    eyebrows_expand_mod: float = 1.0
    xseg_polygons: tuple[XSegPolygon, ...] = ()
    xseg_mask_png: bytes | None = None
    identity: tuple[float, ...] | None = None
    track_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    identity_model: str | None = None

    def xseg_mask(self) -> np.ndarray | None:
        """The applied XSeg mask as H x W x 1 float32 in [0, 1], or None."""
        if self.xseg_mask_png is None:
            return None
        mask = decode_image(self.xseg_mask_png, cv2.IMREAD_UNCHANGED)
        if mask is None:
            return None
        if mask.ndim == 3:
            mask = mask[..., 0]
        return (mask.astype(np.float32) / 255.0)[..., None]

    def with_xseg_mask(self, mask: np.ndarray | None) -> FaceMeta:
        """A copy holding `mask` (H x W [x 1] float in [0, 1] or uint8), stored as lossless PNG."""
        if mask is None:
            return replace(self, xseg_mask_png=None)
        m = np.asarray(mask)
        if m.ndim == 3:
            m = m[..., 0]
        if m.dtype != np.uint8:
            m = np.clip(np.rint(m.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        return replace(self, xseg_mask_png=encode_image(m, ".png"))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (arrays as lists); the embedded format."""
        return {
            "schema": SCHEMA,
            "version": SCHEMA_VERSION,
            "face_type": self.face_type.dfl_name,
            "landmarks": _to_list(self.landmarks),
            "source_filename": self.source_filename,
            "source_rect": _to_list(self.source_rect),
            "source_landmarks": _to_list(self.source_landmarks),
            "image_to_face_mat": _to_list(self.image_to_face_mat),
            "eyebrows_expand_mod": float(self.eyebrows_expand_mod),
            "xseg_polygons": [
                {"type": "include" if p.include else "exclude", "points": _to_list(p.points)}
                for p in self.xseg_polygons
            ],
            "xseg_mask_png": base64.b64encode(self.xseg_mask_png).decode("ascii") if self.xseg_mask_png else None,
            "identity": list(self.identity) if self.identity is not None else None,
            "identity_model": self.identity_model,
            "track_id": self.track_id,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaceMeta:
        if not isinstance(data, dict):
            raise FaceMetaError(f"face metadata is a {type(data).__name__}, not an object")
        if data.get("schema") != SCHEMA:
            raise FaceMetaError(f"not FaceLab face metadata (schema {data.get('schema')!r})")
        if int(data.get("version", 0)) > SCHEMA_VERSION:
            raise FaceMetaError(
                f"face metadata version {data['version']} is newer than this FaceLab reads ({SCHEMA_VERSION}): update FaceLab"
            )
        mask = data.get("xseg_mask_png")
        polygons = data.get("xseg_polygons") or []
        if not isinstance(polygons, list) or len(polygons) > MAX_POLYGONS:
            raise FaceMetaError(f"xseg_polygons: expected a list of at most {MAX_POLYGONS} polygons")
        identity = data.get("identity")
        if identity is not None and (not isinstance(identity, list) or len(identity) > MAX_IDENTITY):
            raise FaceMetaError(f"identity: expected a list of at most {MAX_IDENTITY} numbers")
        identity_model = data.get("identity_model")
        if identity_model is not None and not (isinstance(identity_model, str) and len(identity_model) <= 100):
            raise FaceMetaError(f"identity_model: expected a short text, got {identity_model!r:.40}")
        track = data.get("track_id")
        if track is not None and (isinstance(track, bool) or not isinstance(track, int)):
            raise FaceMetaError(f"track_id: expected a whole number, got {track!r:.40}")
        extra = data.get("extra") or {}
        if not isinstance(extra, dict):
            raise FaceMetaError("extra: expected an object")
        source = data.get("source_filename")
        if source is not None and not isinstance(source, str):
            raise FaceMetaError("source_filename: expected text")
        return cls(
            face_type=FaceType.parse(data["face_type"]),
            landmarks=_points(data["landmarks"], "landmarks", 68),
            source_filename=source,
            source_rect=_fixed(data.get("source_rect"), "source_rect", (4,), np.float64),
            source_landmarks=_points(data.get("source_landmarks"), "source_landmarks", 68),
            image_to_face_mat=_fixed(data.get("image_to_face_mat"), "image_to_face_mat", (2, 3), np.float64),
            eyebrows_expand_mod=_number(data.get("eyebrows_expand_mod", 1.0), "eyebrows_expand_mod"),
            xseg_polygons=_polygons([(p["type"] == "include", p["points"]) for p in polygons]),
            xseg_mask_png=_mask_png(base64.b64decode(mask, validate=True)) if mask else None,
            identity=tuple(_number(v, "identity") for v in identity) if identity is not None else None,
            track_id=track,
            extra=dict(extra),
            identity_model=identity_model,
        )


def _to_list(value: np.ndarray | None) -> Any:
    return None if value is None else np.asarray(value).tolist()


def _checked(value: Any, what: str, dtype: type, limit: int) -> np.ndarray:
    """`value` as a finite array of at most `limit` numbers (counted before converting)."""
    if isinstance(value, np.ndarray):
        if value.size > limit:
            raise FaceMetaError(f"{what}: {value.size} values, at most {limit} expected")
        arr = value
    else:
        _count(value, limit, what)
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError) as exc:  # ragged lists and the like
            raise FaceMetaError(f"{what}: not an array of numbers ({str(exc)[:80]})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise FaceMetaError(f"{what}: expected numbers")
    arr = arr.astype(dtype)
    if not np.isfinite(arr).all():
        raise FaceMetaError(f"{what}: not every value is a finite number")
    return arr


def _count(value: Any, limit: int, what: str, depth: int = 0) -> int:
    """How many leaves nested lists hold; FaceMetaError past `limit` or MAX_PICKLE_DEPTH."""
    if depth > MAX_PICKLE_DEPTH:
        raise FaceMetaError(f"{what}: nested too deep")
    if isinstance(value, np.ndarray):
        n = value.size
    elif isinstance(value, (list, tuple)):
        n = 0
        for item in value:
            n += _count(item, limit - n, what, depth + 1)
            if n > limit:
                break
    else:
        n = 1
    if n > limit:
        raise FaceMetaError(f"{what}: more than {limit} values")
    return n


def _points(value: Any, what: str, rows: int | None = None) -> np.ndarray | None:
    """N x 2 finite float32 points (exactly `rows` of them when given)."""
    if value is None:
        return None
    arr = _checked(value, what, np.float32, MAX_POINTS * 2)
    if arr.ndim == 1 and arr.size % 2 == 0:
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or (rows is not None and arr.shape[0] != rows):
        want = f"{rows} x 2" if rows else "N x 2"
        raise FaceMetaError(f"{what}: expected {want} points, got shape {tuple(arr.shape)}")
    return arr


def _fixed(value: Any, what: str, shape: tuple[int, ...], dtype: type) -> np.ndarray | None:
    if value is None:
        return None
    arr = _checked(value, what, dtype, int(np.prod(shape)))
    if arr.size != int(np.prod(shape)):
        raise FaceMetaError(f"{what}: expected {' x '.join(map(str, shape))} numbers, got {arr.size}")
    return arr.reshape(shape)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise FaceMetaError(f"{what}: expected a finite number, got {value!r:.40}")
    return float(value)


def _polygons(raw: list[tuple[Any, Any]]) -> tuple[XSegPolygon, ...]:
    if len(raw) > MAX_POLYGONS:
        raise FaceMetaError(f"xseg polygons: {len(raw)}, at most {MAX_POLYGONS}")
    out, total = [], 0
    for include, pts in raw:
        points = _points(pts, "xseg polygon")
        total += len(points)
        if total > MAX_POINTS:
            raise FaceMetaError(f"xseg polygons: more than {MAX_POINTS} points")
        out.append(XSegPolygon(bool(include), points))
    return tuple(out)


def _mask_png(data: bytes) -> bytes:
    """An applied mask's PNG bytes, refused when its header is not a PNG of at most MAX_SIDE."""
    size = image_size_from_bytes(data) if data.startswith(_PNG_SIGNATURE) else None
    if size is None or not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE):
        raise FaceMetaError(f"xseg mask: not a PNG of at most {MAX_SIDE} x {MAX_SIDE} pixels")
    return data


# ---------------------------------------------------------------- JPEG segments


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Segments before the scan as (marker, payload), and the offset where the scan (SOS) starts."""
    if data[:2] != b"\xff\xd8":
        raise FaceMetaError("not a JPEG file")
    pos, segments = 2, []
    while pos < len(data):
        if data[pos] != 0xFF:
            raise FaceMetaError(f"broken JPEG: no marker at byte {pos}")
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        marker = data[pos]
        pos += 1
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        if marker == 0xD9:
            return segments, pos - 2
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if marker == _SOS:
            return segments, pos - 2
        segments.append((marker, data[pos + 2 : pos + length]))
        pos += length
    raise FaceMetaError("broken JPEG: no image data")


def _embed_jpeg(data: bytes, text: bytes) -> bytes:
    segments, scan_at = _jpeg_segments(data)
    kept = [(m, p) for m, p in segments if not (m == _APP10 and p.startswith(_JPEG_ID)) and m != _APP15]
    pieces = [text[i : i + _MAX_PIECE] for i in range(0, len(text), _MAX_PIECE)] or [b""]
    if len(pieces) > 255:
        raise FaceMetaError("face metadata too large (over 16 MB)")
    ours = [(_APP10, _JPEG_ID + bytes([i, len(pieces)]) + piece) for i, piece in enumerate(pieces)]
    last_app = max((i for i, (m, _) in enumerate(kept) if 0xE0 <= m <= 0xEF), default=-1)
    new = kept[: last_app + 1] + ours + kept[last_app + 1 :]
    out = io.BytesIO()
    out.write(b"\xff\xd8")
    for marker, payload in new:
        out.write(bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload)
    out.write(data[scan_at:])
    return out.getvalue()


def _read_jpeg_meta(data: bytes, name: str) -> FaceMeta | None:
    segments, _ = _jpeg_segments(data)
    pieces = [p[len(_JPEG_ID) :] for m, p in segments if m == _APP10 and p.startswith(_JPEG_ID)]
    if pieces:
        total = pieces[0][1]
        ordered = sorted(pieces, key=lambda p: p[0])
        if len(ordered) != total or [p[0] for p in ordered] != list(range(total)):
            raise FaceMetaError(f"{name}: face metadata is incomplete ({len(ordered)} of {total} pieces)")
        return _from_json(b"".join(p[2:] for p in ordered), name)
    legacy = [p for m, p in segments if m == _APP15]
    if legacy:
        return face_meta_from_dfl(load_dfl_pickle(legacy[0], name), name)
    return None


# ---------------------------------------------------------------- PNG chunks


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    return [(ctype, data[start + 8 : end - 4]) for ctype, start, end in _png_chunk_spans(data)]


def _png_chunk_spans(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, start, end) of each chunk, its length, type and CRC included."""
    if not data.startswith(_PNG_SIGNATURE):
        raise FaceMetaError("not a PNG file")
    pos, spans = len(_PNG_SIGNATURE), []
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        spans.append((ctype, pos, pos + 12 + length))
        pos += 12 + length
        if ctype == b"IEND":
            break
    return spans


def _png_chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def png_text_chunk(keyword: bytes, text: bytes, compress: bool) -> bytes:
    """An iTXt chunk (keyword, optional zlib, empty language and translated keyword)."""
    body = keyword + b"\x00" + (b"\x01\x00" if compress else b"\x00\x00") + b"\x00\x00"
    return _png_chunk(b"iTXt", body + (zlib.compress(text, 6) if compress else text))


def embed_png_text(data: bytes, keyword: bytes, text: bytes) -> bytes:
    """Replace/insert the iTXt chunk `keyword` right after IHDR."""
    return embed_png_texts(data, {keyword: text})


def embed_png_texts(data: bytes, texts: dict[bytes, bytes]) -> bytes:
    """Replace/insert iTXt chunks (keyword -> text) right after IHDR. The other chunks are
    copied as they are (a merged 720p frame is megabytes of IDAT: no re-checksumming)."""
    out, view = [_PNG_SIGNATURE], memoryview(data)
    for ctype, start, end in _png_chunk_spans(data):
        if ctype == b"iTXt" and data[start + 8 : end - 4].split(b"\x00", 1)[0] in texts:
            continue
        out.append(view[start:end])
        if ctype == b"IHDR":
            out.extend(png_text_chunk(k, v, compress=len(v) > 4096) for k, v in texts.items())
    return b"".join(out)


def read_png_text(data: bytes, keyword: bytes) -> bytes | None:
    for ctype, body in _png_chunks(data):
        if ctype != b"iTXt":
            continue
        key, rest = body.split(b"\x00", 1)
        if key != keyword:
            continue
        compressed = rest[0] == 1
        _, rest = rest[2:].split(b"\x00", 1)  # language tag
        _, text = rest.split(b"\x00", 1)  # translated keyword
        return _inflate(text, MAX_META_BYTES) if compressed else text
    return None


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib-decompress at most `limit` bytes; FaceMetaError beyond (a small file must not expand to gigabytes)."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit)
    if inflater.unconsumed_tail:  # input left over once `limit` bytes came out
        raise FaceMetaError(f"face metadata expands to more than {limit >> 20} MB")
    return out


# ---------------------------------------------------------------- public API


def _from_json(raw: bytes, name: str) -> FaceMeta:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FaceMetaError(f"{name}: face metadata is damaged ({type(exc).__name__}: {str(exc)[:120]})") from None
    try:
        return FaceMeta.from_dict(data)
    except FaceMetaError as exc:
        raise FaceMetaError(f"{name}: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FaceMetaError(f"{name}: face metadata is damaged ({type(exc).__name__}: {str(exc)[:120]})") from None


def embed_meta(image_bytes: bytes, meta: FaceMeta) -> bytes:
    """Encoded JPEG or PNG bytes with `meta` embedded (the format is taken from the bytes)."""
    text = json.dumps(meta.to_dict(), separators=(",", ":")).encode("utf-8")
    if image_bytes.startswith(_PNG_SIGNATURE):
        return embed_png_text(image_bytes, _PNG_KEYWORD, text)
    return _embed_jpeg(image_bytes, text)


def image_size_from_bytes(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's SOF or a PNG's IHDR without decoding; None if unknown."""
    if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return height, width
    if data.startswith(b"\xff\xd8"):
        try:
            segments, _ = _jpeg_segments(data)
        except FaceMetaError:
            return None
        for marker, payload in segments:
            if marker in (0xC0, 0xC1, 0xC2) and len(payload) >= 5:
                height, width = struct.unpack(">HH", payload[1:5])
                return height, width
    return None


def meta_from_bytes(data: bytes, name: str = "image") -> FaceMeta | None:
    """Metadata embedded in JPEG/PNG bytes: ours, or DFL's legacy APP15; None if there is none.

    Every malformed file (truncated segments, broken chunks, JSON or pickle of the wrong shape,
    too large once decompressed) is a FaceMetaError naming the file; nothing else escapes."""
    try:
        if data.startswith(_PNG_SIGNATURE):
            raw = read_png_text(data, _PNG_KEYWORD)
            meta = _from_json(raw, name) if raw is not None else None
        elif data.startswith(b"\xff\xd8"):
            meta = _read_jpeg_meta(data, name)
        else:
            return None
    except FaceMetaError as exc:
        text = str(exc)
        raise FaceMetaError(text if text.startswith(name) else f"{name}: {text}") from None
    except _DAMAGE as exc:
        raise FaceMetaError(f"{name}: face metadata is damaged ({type(exc).__name__}: {str(exc)[:120]})") from None
    if meta is not None:
        size = image_size_from_bytes(data)
        if size is not None and not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE):
            raise FaceMetaError(f"{name}: a face of {size[1]} x {size[0]} pixels (at most {MAX_SIDE} x {MAX_SIDE})")
    return meta


def read_meta(path: Path) -> FaceMeta | None:
    """Metadata of an aligned face file (None: an image without face metadata)."""
    return meta_from_bytes(Path(path).read_bytes(), Path(path).name)


def read_face(path: Path) -> tuple[ImageBGR, FaceMeta | None]:
    """Pixels (BGR uint8) and metadata of an aligned face file."""
    img = read_image(path)
    if img is None:
        raise FaceMetaError(f"{path} cannot be read as an image")
    return img, read_meta(path)


def encode_face(img_bgr: ImageBGR, meta: FaceMeta, ext: str = ".jpg", jpeg_quality: int = 90) -> bytes:
    return embed_meta(encode_image(img_bgr, ext, jpeg_quality), meta)


def write_face(path: Path, img_bgr: ImageBGR, meta: FaceMeta, jpeg_quality: int = 90) -> None:
    """Encode by extension (.jpg/.png), embed `meta`, write atomically."""
    write_bytes_atomic(Path(path), encode_face(img_bgr, meta, Path(path).suffix, jpeg_quality))


def write_meta(path: Path, meta: FaceMeta) -> None:
    """Replace the metadata of an existing face file without re-encoding its pixels."""
    path = Path(path)
    write_bytes_atomic(path, embed_meta(path.read_bytes(), meta))


# ---------------------------------------------------------------- DFL legacy


def _numpy_globals(name: str) -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]

    def reconstruct(cls: Any, shape: Any, dtype: Any) -> Any:
        """numpy pickles an empty array and fills it from the file's bytes (`__setstate__`): a
        crafted file could ask `_reconstruct` for gigabytes outright, with no bytes behind them."""
        if cls is not np.ndarray or not isinstance(shape, tuple) or 0 not in shape:
            raise FaceMetaError(f"{name}: refused an array that is not built from the file's own bytes")
        return multiarray._reconstruct(cls, shape, dtype)

    allowed = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """Unpickler for DFL's files that resolves only numpy's array/dtype/scalar constructors.

    Plain containers, strings and numbers need no globals; anything else (os.system,
    builtins.eval, a class of some package, ...) raises before it can be called.
    """

    def __init__(self, file: io.BytesIO, name: str, extra: dict[tuple[str, str], Any] | None = None):
        super().__init__(file)
        self._name = name
        self._allowed = {**_numpy_globals(name), **(extra or {})}

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise FaceMetaError(
                f"{self._name}: refused DFL metadata that asks for {module}.{name} "
                "(only numpy arrays are allowed); nothing was executed"
            )
        return found


def load_dfl_pickle(payload: bytes, name: str, extra: dict[tuple[str, str], Any] | None = None,
                    max_items: int = MAX_PICKLE_ITEMS) -> Any:  # fmt: skip
    """Unpickle DFL data through `SafeUnpickler` (raises FaceMetaError when refused or broken).

    `max_items` bounds the values it may expand to; a model's `_data.dat` (one loss pair per
    iteration) needs more than a face's metadata."""
    try:
        data = SafeUnpickler(io.BytesIO(payload), name, extra).load()
        _count_all(data, name, max_items)
        return data
    except FaceMetaError:
        raise
    except Exception as exc:  # noqa: BLE001 - any broken pickle is a damaged file
        raise FaceMetaError(f"{name}: DFL metadata is damaged ({type(exc).__name__}: {exc})") from None


def _count_all(value: Any, name: str, max_items: int) -> None:
    """Refuse an unpickled value that expands past `max_items` values (a few hundred bytes of
    pickle that share sub-lists can stand for billions), nests past MAX_PICKLE_DEPTH, or holds an
    array of Python objects. Arrays count once: their data is in the file byte for byte;
    converting lists to arrays is bounded again where it happens (`_checked`)."""
    budget = [max_items]

    def walk(v: Any, depth: int) -> None:
        if depth > MAX_PICKLE_DEPTH:
            raise FaceMetaError(f"{name}: DFL metadata nests deeper than {MAX_PICKLE_DEPTH}")
        budget[0] -= 1  # an array is its own bytes in the file (a model's weights): one value here
        if budget[0] < 0:
            raise FaceMetaError(f"{name}: DFL metadata expands past {max_items} values")
        if isinstance(v, dict):
            for k, item in v.items():
                walk(k, depth + 1)
                walk(item, depth + 1)
        elif isinstance(v, (list, tuple, set, frozenset)):
            for item in v:
                walk(item, depth + 1)
        elif isinstance(v, np.ndarray) and v.dtype.hasobject:
            raise FaceMetaError(f"{name}: refused an array of Python objects (DFL writes numbers only)")

    walk(value, 0)


def dfl_weights_cap(values: int) -> int:
    """The most bytes a weights file for a network of `values` numbers may take: float32 twice
    over (DFL writes float32) plus room for the names. Anything bigger is refused unread."""
    return 8 * values + (16 << 20)


def read_dfl_arrays(path: Path, max_bytes: int) -> dict[str, np.ndarray]:
    """A DFL weights file (`*.npy`: a pickled `{"layer/var:0": ndarray}`) through the allow-list
    unpickler. A file past `max_bytes` (what the network it is meant for can hold, plus room) is
    refused before it is read; every entry must be a numeric array under a text name."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise FaceMetaError(f"{path} is {size / 2**20:.0f} MB, more than this network's weights take "
                            f"({max_bytes / 2**20:.0f} MB at most): it is not the right weights file")  # fmt: skip
    raw = load_dfl_pickle(path.read_bytes(), path.name)
    if not isinstance(raw, dict):
        raise FaceMetaError(f"{path} is not a DFL weights file (no name -> array table inside)")
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiu":
            raise FaceMetaError(f"{path}: its entry {str(key)[:80]!r} is not a table of numbers: not a DFL weights file")
    return raw


def _dfl_polygons(raw: Any) -> tuple[XSegPolygon, ...]:
    if raw is None:
        return ()
    polys: Iterable[Any] = raw.get("polys", []) if isinstance(raw, dict) else raw
    out = []
    for poly in polys:
        if isinstance(poly, dict):
            ptype, pts = poly.get("type"), poly.get("pts")
        else:  # legacy: (type, points)
            ptype, pts = poly[0], poly[1]
        out.append((int(ptype) == 1, pts))
    return _polygons(out)


def face_meta_from_dfl(d: Any, name: str = "image") -> FaceMeta:
    """Convert DFL's metadata dict (dfl-spec §3) to ours. DFL's JPEG xseg masks become PNG."""
    if not isinstance(d, dict) or "landmarks" not in d:
        raise FaceMetaError(f"{name}: not DFL face metadata")
    mask_png = None
    if d.get("xseg_mask") is not None:
        raw = np.asarray(d["xseg_mask"], np.uint8).reshape(-1)
        size = image_size_from_bytes(raw.tobytes())
        if size is None or not (0 < size[0] <= MAX_SIDE and 0 < size[1] <= MAX_SIDE):
            raise FaceMetaError(f"{name}: DFL xseg mask is not an image of at most {MAX_SIDE} x {MAX_SIDE} pixels")
        mask = decode_image(raw, cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise FaceMetaError(f"{name}: DFL xseg mask cannot be decoded")
        mask_png = encode_image(mask, ".png")
    mat = d.get("image_to_face_mat")
    rect = d.get("source_rect")
    src_lm = d.get("source_landmarks")
    return FaceMeta(
        face_type=FaceType.parse(d.get("face_type", "full_face")),
        landmarks=_points(d["landmarks"], "landmarks", 68),
        source_filename=d.get("source_filename") if isinstance(d.get("source_filename"), str) else None,
        source_rect=_fixed(rect, "source_rect", (4,), np.float64),
        source_landmarks=_points(src_lm, "source_landmarks", 68),
        image_to_face_mat=_fixed(mat, "image_to_face_mat", (2, 3), np.float64),
        eyebrows_expand_mod=_number(d.get("eyebrows_expand_mod") or 1.0, "eyebrows_expand_mod"),
        xseg_polygons=_dfl_polygons(d.get("seg_ie_polys")),
        xseg_mask_png=mask_png,
        extra={"imported_from": "dfl"},
    )
