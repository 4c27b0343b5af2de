"""A faceset as a list of faces, from a folder of aligned images or a packed `faceset.fpk`.

The pack is a plain zip (nothing executable inside, no pickle):
- `manifest.json`: schema, version, and per face its name, size, sha256 and metadata;
- the face images themselves, stored byte for byte (JPEG/PNG are already compressed).
Unpacking gives back identical files. A pack whose bytes were changed is refused by name: zip's
CRC and the manifest's sha256 both guard every face. Training reads a pack directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from facelab.errors import UserError
from facelab.io.faceimage import FaceMeta, FaceMetaError, image_size_from_bytes, meta_from_bytes, read_face, read_meta, write_meta
from facelab.io.frames import list_images
from facelab.io.journal import finish_renames
from facelab.io.names import plain_file_name

log = logging.getLogger(__name__)

PACK_NAME = "faceset.fpk"
UNPACKING = ".unpacking"  # where an unpack writes before moving the faces in
PACK_SCHEMA = "facelab.faceset-pack"
PACK_VERSION = 1


@dataclass(frozen=True, eq=False)
class Face:
    """One aligned face: where its bytes are, and its metadata (None: a plain image)."""

    name: str
    meta: FaceMeta | None
    read_bytes: Callable[[], bytes]
    path: Path | None = None  # None inside a pack
    error: str | None = None  # why the metadata could not be read
    shape: tuple[int, int] | None = None  # (height, width) of the image, from its header


def _face_from_file(path: Path) -> Face:
    data = path.read_bytes()
    shape = image_size_from_bytes(data)
    try:
        return Face(path.name, meta_from_bytes(data, path.name), path.read_bytes, path, shape=shape)
    except FaceMetaError as exc:
        return Face(path.name, None, path.read_bytes, path, str(exc), shape=shape)


def load_faceset(folder: Path, report: bool = True) -> list[Face]:
    """Every face of an aligned folder, or of its `faceset.fpk` when the folder holds only that.

    A face that cannot be read is kept with `meta` None and `error` saying why (the stages skip
    it); with `report`, the unreadable ones are named in one warning, once per folder and process."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist: extract faces first (scripts 4 / 5)")
    finish_renames(folder)  # a sort killed halfway is finished before anything reads the faces
    if (folder / UNPACKING).is_dir():
        raise UserError(f"an unpack of {folder / PACK_NAME} was interrupted, so {folder} holds only part of its faces: "
                        "run the faceset unpack script again to finish it")  # fmt: skip
    files = list_images(folder)
    pack = folder / PACK_NAME
    faces = list(read_pack(pack)) if not files and pack.exists() else [_face_from_file(p) for p in files]
    if report:
        report_unreadable(folder, faces)
    return faces


_REPORTED: set[tuple[str, str]] = set()
NAMED = 5  # unreadable faces named in the warning; `faceset info` lists them all


def why_unreadable(face: Face) -> str:
    why = face.error or "no face metadata"
    return why[len(face.name) + 2 :] if why.startswith(f"{face.name}: ") else why


def report_unreadable(folder: Path, faces: list[Face]) -> None:
    bad = [f for f in faces if f.meta is None and (str(folder), f.name) not in _REPORTED]
    if not bad:
        return
    _REPORTED.update((str(folder), f.name) for f in bad)
    named = "; ".join(f"{f.name} ({why_unreadable(f)})" for f in bad[:NAMED])
    more = f" and {len(bad) - NAMED} more" if len(bad) > NAMED else ""
    log.warning("%d face%s in %s could not be read and %s left out: %s%s (see `faceset info`)", len(bad),
                "s" if len(bad) > 1 else "", folder, "are" if len(bad) > 1 else "is", named, more)  # fmt: skip


def require_faces(folder: Path, what: str = "faces") -> list[Face]:
    faces = load_faceset(folder)
    if not faces:
        raise UserError(f"{folder} has no {what}: extract faces first (scripts 4 / 5)")
    return faces


# ---------------------------------------------------------------- pack


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_pack(faces: list[Face], pack_path: Path) -> int:
    """Pack `faces` into `pack_path` (written to a temp name, then renamed). Returns bytes written."""
    tmp = pack_path.with_name(pack_path.name + ".tmp")
    entries = []
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for face in faces:
                data = face.read_bytes()
                zf.writestr(face.name, data)
                entries.append({"name": face.name, "size": len(data), "sha256": _sha256(data),
                                "shape": list(face.shape or image_size_from_bytes(data) or []) or None,
                                "meta": face.meta.to_dict() if face.meta else None})  # fmt: skip
            manifest = {"schema": PACK_SCHEMA, "version": PACK_VERSION, "faces": entries}
            zf.writestr("manifest.json", json.dumps(manifest, separators=(",", ":")))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:  # disk full, Ctrl+C: no half pack left behind (the loose faces are untouched)
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, pack_path)
    return pack_path.stat().st_size


def _damaged(pack: Path, why: str) -> UserError:
    return UserError(f"{pack} is damaged ({why}): unpack it from a backup, or extract the faces again")


def read_pack(pack: Path) -> Iterator[Face]:
    """The faces of a pack, each checked against the manifest when its bytes are read."""
    try:
        zf = zipfile.ZipFile(pack)
        manifest = json.loads(zf.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise _damaged(pack, str(exc)) from None
    if manifest.get("schema") != PACK_SCHEMA:
        raise UserError(f"{pack} is not a FaceLab faceset pack")
    if int(manifest.get("version", 0)) > PACK_VERSION:
        raise UserError(f"{pack} was written by a newer FaceLab (pack version {manifest['version']}): update FaceLab")
    names = set(zf.namelist())
    for entry in manifest["faces"]:
        name = entry["name"]
        try:
            plain_file_name(name, f"{pack.name}'s manifest")
        except UserError:
            raise _damaged(pack, f"entry {name!r} is not a plain file name (by Linux or Windows rules)") from None
        if name not in names or name.startswith("."):
            raise _damaged(pack, f"entry {name!r} is missing or not a plain file name")
        shape = tuple(entry["shape"]) if entry.get("shape") else None

        def read(name: str = name, entry: dict = entry) -> bytes:
            try:
                data = zf.read(name)
            except (zipfile.BadZipFile, OSError) as exc:  # CRC mismatch and friends
                raise _damaged(pack, f"{name}: {exc}") from None
            if len(data) != entry["size"] or _sha256(data) != entry["sha256"]:
                raise _damaged(pack, f"{name} does not match its checksum")
            return data

        try:
            meta, error = (FaceMeta.from_dict(entry["meta"]) if entry.get("meta") else None), None
        except FaceMetaError as exc:
            meta, error = None, f"{name}: {exc}"
        yield Face(name, meta, read, error=error, shape=shape)


# ---------------------------------------------------------------- files of a faceset being edited


def trash_folder(folder: Path) -> Path:
    """Where faces taken out of `folder` go (DFL's `<aligned>_trash`)."""
    return folder.parent / f"{folder.name}_trash"


def unique_path(folder: Path, name: str) -> Path:
    """`folder/name`, or `folder/<stem>_<n><ext>` with the first n that is free."""
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{Path(name).stem}_{n}{Path(name).suffix}"
        n += 1
    return target


def move_to_trash(path: Path) -> Path:
    """Move a face into its folder's trash under a name nothing there has; returns where."""
    trash = trash_folder(path.parent)
    trash.mkdir(exist_ok=True)
    target = unique_path(trash, path.name)
    os.replace(path, target)
    return target


class FacesetFiles:
    """The loose face files of one folder, for a window that edits them (the XSeg editor): the
    window asks here instead of listing, writing and moving files itself."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.paths = list_images(self.folder)

    def read(self, index: int) -> tuple:
        """(image BGR uint8, FaceMeta or None) of face `index`."""
        return read_face(self.paths[index])

    def meta(self, index: int) -> FaceMeta | None:
        return read_meta(self.paths[index])

    def save_meta(self, index: int, meta: FaceMeta) -> None:
        write_meta(self.paths[index], meta)

    def trash(self, index: int) -> Path:
        """Move face `index` to the trash (a same-named face already there is kept)."""
        return move_to_trash(self.paths.pop(index))
