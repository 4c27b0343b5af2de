"""Image listing, reading and writing: unicode paths, atomic writes, frame-sequence checks.

Images are found as DFL finds them (dfl-spec §2): by extension, non-recursive, sorted by name.
Reads go through `np.fromfile` + `cv2.imdecode` so non-ASCII paths work on Windows; writes go to
a temporary file in the same folder, are flushed to disk, then renamed over the target, so a
crash never leaves a half-written image under the real name.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from facelab.types import ImageBGR

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff")


def list_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in `folder` (not sub-folders), sorted by name; [] if it is missing."""
    exts = {e.lower() for e in extensions}
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts),
        key=lambda p: p.name,
    )


def read_image(path: Path) -> ImageBGR | None:
    """Read an image as BGR uint8 HxWx3; None if it cannot be decoded."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    return decode_image(data)


def decode_image(data: bytes | np.ndarray, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Decode image bytes; None when they are not an image, or one larger than OpenCV's pixel
    limit (set in facelab/__init__.py; OpenCV raises for those instead of returning None)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        return None
    try:
        return cv2.imdecode(buf, flags)
    except cv2.error:
        return None


def encode_image(img: np.ndarray, ext: str, jpeg_quality: int = 90, png_compression: int = 3, fast_png: bool = False) -> bytes:
    """Encode an image to `.png` / `.jpg` bytes (raises ValueError if OpenCV refuses).

    `fast_png`: zlib level 1 with the "up" row filter and run-length matching, for frames written
    by the thousand (the merger): 2-3x faster than level 1 with adaptive filters, files about as
    large (smaller on noisy video), still lossless."""
    ext = ext.lower() if ext.startswith(".") else "." + ext.lower()
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_compression)]
        if fast_png:
            params = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE]
            if hasattr(cv2, "IMWRITE_PNG_FILTER"):  # OpenCV >= 4.11
                params += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {img.shape} image as {ext}")
    return buf.tobytes()


_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file + fsync + rename (+ fsync of the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        try:  # mkstemp makes 0600; keep the replaced file's permissions, else the umask's
            mode = os.stat(path).st_mode & 0o7777
        except OSError:
            mode = 0o666 & ~_UMASK
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` as a hard link to `src` (no extra disk), or a copy where links are impossible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_image_atomic(path: Path, img: np.ndarray, jpeg_quality: int = 90) -> None:
    """Encode by the file's extension and write atomically."""
    write_bytes_atomic(path, encode_image(img, path.suffix, jpeg_quality))


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (no-op where directories cannot be opened, e.g. Windows)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_NUMBERED = re.compile(r"^(\d+)$")


@dataclass(frozen=True)
class FrameSequence:
    """A numbered image sequence as ffmpeg's image2 demuxer reads it (`%05d.png` from N)."""

    folder: Path
    ext: str  # ".png"
    digits: int
    first: int
    count: int

    @property
    def pattern(self) -> str:
        return str(self.folder / f"%0{self.digits}d{self.ext}")

    def name(self, number: int) -> str:
        return f"{number:0{self.digits}d}{self.ext}"


def numbered_sequence(frames: list[Path], expected_stems: list[str] | None = None) -> FrameSequence:
    """Check that `frames` form one gap-free numbered sequence and describe it.

    Args:
        frames: image files of one folder (from `list_images`), all named by number.
        expected_stems: stems that must all be present (e.g. the frames of data_dst), so a
            merge that stopped early is caught too.

    Raises:
        ValueError: with a message naming the first problem (mixed extensions, a name that
            is not a number, the first missing frame).
    """
    if not frames:
        raise ValueError("no frames")
    folder = frames[0].parent
    exts = sorted({p.suffix.lower() for p in frames})
    if len(exts) > 1:
        raise ValueError(f"{folder} mixes image formats ({', '.join(exts)}): keep one")
    numbers: list[int] = []
    digits = len(frames[0].stem)
    for p in frames:
        if not _NUMBERED.match(p.stem):
            raise ValueError(f"{p.name} in {folder} is not named by frame number (like 00001{exts[0]})")
        if len(p.stem) != digits:
            raise ValueError(f"{p.name} in {folder} has {len(p.stem)} digits, other frames {digits}")
        numbers.append(int(p.stem))
    numbers.sort()
    for expected, actual in zip(range(numbers[0], numbers[0] + len(numbers)), numbers):
        if expected != actual:
            raise ValueError(f"frame {expected:0{digits}d}{exts[0]} is missing from {folder}")
    if expected_stems:
        have = {p.stem for p in frames}
        missing = [s for s in expected_stems if s not in have]
        if missing:
            raise ValueError(
                f"frame {missing[0]}{exts[0]} is missing from {folder} "
                f"({len(missing)} of {len(expected_stems)} frames not there)"
            )
    return FrameSequence(folder=folder, ext=frames[0].suffix, digits=digits, first=numbers[0], count=len(numbers))
