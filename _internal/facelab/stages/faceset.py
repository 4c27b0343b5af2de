"""Scripts 4.2 / 5.2 faceset utilities (dfl-spec §11 "Faceset utilities"), plus `dump` and `info`.

`run` is a generator: it yields output lines (dump's JSON, info's table) and returns the Report.

Actions and where they differ from DFL:
- dump: one JSON object per face (file name and every metadata field).
- add-landmarks-debug: overlays go to `<aligned>_landmarks/` (DFL wrote `<stem>_debug.jpg` into
  the faceset itself, where training then met images without metadata).
- recover-filenames: back to `<frame stem>_<n>.jpg` from the metadata.
- metadata-save / metadata-restore: `facelab_meta.json` in the folder (JSON, not pickle). Restore
  re-embeds it into images an editor stripped; an image whose size changed is resized back
  (Lanczos), or with `--keep-size` keeps its size and the metadata is scaled to it.
- pack / unpack: `faceset.fpk`, a zip with a checksummed JSON manifest (`io.faceset`). Pack checks
  the pack it wrote before deleting the loose files (`--no-delete-originals` keeps them); unpack
  restores byte-identical files and then deletes the pack.
- resize: size and optional face type change into `<aligned>_resized/`; landmarks, polygons, the
  applied mask and the matrix are carried over (a wider face type than the source leaves black
  borders, as in DFL).
- export-masks: `<aligned>_masks/<stem>.png`, the applied XSeg mask, else the polygons.
- info: counts, face types, sizes, labels, how many people (identities), a yaw/pitch coverage
  table, and `<aligned>_info/` with a contact sheet and a yaw x pitch plot (outside the faceset,
  so training never reads them).
- add-identities (new): computes each face's identity from the face and its own landmarks and
  stores it (DFL-made facesets too; faces that already have one from the current model are
  skipped, so a stopped run goes on).
- split-identities (new): copies the faces of each person into `<aligned>_person_1/`, `_2/`, ...
  (the largest group first), so that one folder can be kept; the faceset itself is not changed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from facelab.core.landmarks import (
    FACE_TYPE_CHOICES, FaceType, compose_affine, estimate_pitch_yaw_roll, reframe_face, transform_points,
)  # fmt: skip
from facelab.core.masks import LANDMARK_MASKS, polygons_mask
from facelab.core.overlay import PITCH_EDGES_DEG, YAW_EDGES_DEG, draw_face_debug, yaw_pitch_plot
from facelab.errors import ConfirmationNeeded, UserError
from facelab.io.faceimage import FaceMeta, FaceMetaError, XSegPolygon, write_face, write_meta
from facelab.io.faceset import PACK_NAME, UNPACKING, Face, load_faceset, read_pack, why_unreadable, write_pack
from facelab.io.names import plain_file_name
from facelab.io.frames import decode_image, link_or_copy, list_images, read_image, write_bytes_atomic, write_image_atomic, write_text_atomic
from facelab.io.journal import rename_all
from facelab.log import iterate
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

ACTIONS = ("dump", "info", "add-landmarks-debug", "recover-filenames", "metadata-save", "metadata-restore",
           "pack", "unpack", "resize", "export-masks", "add-identities", "split-identities")  # fmt: skip
META_FILE = "facelab_meta.json"


@dataclass(frozen=True)
class FacesetOptions:
    action: str = option("Action", "info", choices=ACTIONS, ask=False, positional=True, help="what to do")
    input_dir: str = option("Input folder", "", ask=False, positional=True,
                            help="aligned folder; default workspace/data_<side>/aligned")  # fmt: skip
    side: str = option("Side", "src", choices=("src", "dst"), ask=False, help="which faceset when no folder is given")
    image_size: int = option("New image size", 512, min=128, max=2048, ask=lambda v: v["action"] == "resize",
                             help="resize: side of the resized faces in pixels")  # fmt: skip
    face_type: str = option("New face type", "same", choices=("same", *FACE_TYPE_CHOICES),
                            ask=lambda v: v["action"] == "resize", help="resize: change the framing, or keep it")  # fmt: skip
    keep_size: bool = option("Keep edited size", False, ask=False,
                             help="metadata-restore: keep the edited image size and scale the metadata to it")  # fmt: skip
    delete_originals: bool = option("Delete original files after packing", True, ask=lambda v: v["action"] == "pack",
                                    help="pack: remove the loose face files once the pack is written and checked")  # fmt: skip
    overwrite: bool = option("Overwrite", False, ask=False, help="replace existing output without asking")
    mask: str = option("Mask", "xseg", choices=("xseg", *LANDMARK_MASKS), ask=False,
                       help="export-masks: the applied XSeg mask (else the drawn polygons), or faceswap's landmark "
                            "masks (components, extended)")  # fmt: skip
    replace_bigger: bool = option("Replace a bigger pack", False, ask=False,
                                  help="pack: replace a pack that holds more faces than the folder has")  # fmt: skip


def _faces_with_meta(folder: Path, report: bool = True) -> tuple[list[Face], list[Face]]:
    faces = load_faceset(folder, report)
    if not faces:
        raise UserError(f"{folder} has no faces: extract faces first (scripts 4 / 5)")
    return [f for f in faces if f.meta is not None], [f for f in faces if f.meta is None]


def _output_dir(folder: Path, suffix: str, overwrite: bool) -> Path:
    out = folder.parent / f"{folder.name}_{suffix}"
    if list_images(out) and not overwrite:
        raise ConfirmationNeeded(f"{out} already holds {len(list_images(out))} images that will be replaced", "overwrite")
    out.mkdir(exist_ok=True)
    return out


def run(ws: Workspace, opts: FacesetOptions) -> Iterator[str]:
    started = time.perf_counter()
    folder = ws.faceset_folder(opts.side, opts.input_dir)
    handler = {
        "dump": _dump, "info": _info, "add-landmarks-debug": _landmarks_debug, "recover-filenames": _recover,
        "metadata-save": _meta_save, "metadata-restore": _meta_restore, "pack": _pack, "unpack": _unpack,
        "resize": _resize, "export-masks": _export_masks, "add-identities": _add_identities,
        "split-identities": _split_identities,
    }[opts.action]  # fmt: skip
    summary, counts = yield from handler(folder, opts)
    return Report(f"faceset {opts.action}", summary, time.perf_counter() - started, counts)


# ---------------------------------------------------------------- dump / info


def _dump(folder: Path, opts: FacesetOptions):  # noqa: ANN202 - generator
    faces = skipped = 0
    for face in load_faceset(folder, report=False):
        if face.meta is None:
            yield json.dumps({"file": face.name, "error": face.error or "no face metadata"})
            skipped += 1
            continue
        yield json.dumps({"file": face.name, **face.meta.to_dict()}, separators=(",", ":"))
        faces += 1
    tail = f", {skipped} without readable metadata" if skipped else ""
    return f"{faces} faces in {folder}{tail}", {"faces": faces, "skipped": skipped}




def _info(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, bad = _faces_with_meta(folder, report=False)
    types = Counter(f.meta.face_type.dfl_name for f in good)
    sizes = Counter(f"{f.shape[1]}x{f.shape[0]}" for f in good if f.shape)
    polys = sum(1 for f in good if f.meta.xseg_polygons)
    masks = sum(1 for f in good if f.meta.xseg_mask_png)
    poses = np.array([estimate_pitch_yaw_roll(f.meta.landmarks, f.shape[1])[:2] for f in good if f.shape]) if good else np.zeros((0, 2))
    yaw_deg, pitch_deg = np.degrees(poses[:, 1]), np.degrees(poses[:, 0])
    yield f"faces: {len(good)} with metadata" + (f", {len(bad)} that cannot be used (listed at the end)" if bad else "")
    yield "face types: " + ", ".join(f"{k} {v}" for k, v in types.most_common())
    yield "image sizes: " + ", ".join(f"{k} {v}" for k, v in sizes.most_common())
    yield f"XSeg: {polys} faces with drawn polygons, {masks} with an applied mask"
    yield from _identities_line(good, folder, opts)
    yield "yaw coverage (head turn, degrees):"
    counts, _ = np.histogram(np.clip(yaw_deg, -89.9, 89.9), YAW_EDGES_DEG)
    biggest = max(int(counts.max()), 1) if len(counts) else 1
    for lo, n in zip(YAW_EDGES_DEG[:-1], counts):
        bar = "#" * math.ceil(40 * n / biggest) if n else ""
        yield f"  {lo:+4d}..{lo + 15:+4d}  {n:6d}  {bar}" + ("   <- missing" if n == 0 and -60 <= lo < 60 else "")
    counts, _ = np.histogram(np.clip(pitch_deg, -59.9, 59.9), PITCH_EDGES_DEG)
    yield "pitch coverage (head tilt, degrees): " + ", ".join(f"{lo:+d}..{lo + 15:+d}: {n}" for lo, n in zip(PITCH_EDGES_DEG[:-1], counts))
    out = folder.parent / f"{folder.name}_info"
    out.mkdir(exist_ok=True)
    write_image_atomic(out / "contact_sheet.png", contact_sheet(good))
    write_image_atomic(out / "yaw_pitch.png", yaw_pitch_plot(yaw_deg, pitch_deg))
    yield f"pictures: {out / 'contact_sheet.png'}, {out / 'yaw_pitch.png'}"
    for face in bad:
        yield f"cannot be used: {face.name}: {why_unreadable(face)}"
    return f"{len(good)} faces in {folder}" + (f", {len(bad)} that cannot be used" if bad else ""), {"faces": len(good), "without_meta": len(bad), "polygons": polys, "masks": masks}


def _identities_line(good: list[Face], folder: Path, opts: FacesetOptions) -> Iterator[str]:
    from facelab.core.identity import clusters
    from facelab.detect.identity import default_model, default_key, stored_identity

    key = default_key()
    emb = [e for f in good if (e := stored_identity(f.meta, key)) is not None]
    if not emb:
        yield f"identities: none from {key} (run the add_identities script to tell people apart)"
        return
    sizes = np.bincount(clusters(np.stack(emb), default_model().threshold))
    shown = ", ".join(str(n) for n in sizes[:8]) + (" ..." if len(sizes) > 8 else "")
    missing = f"; {len(good) - len(emb)} faces without one" if len(emb) < len(good) else ""
    yield f"identities: {len(sizes)} {'person' if len(sizes) == 1 else 'people'} (faces each: {shown}){missing}"
    if len(sizes) > 1 and opts.side == "src" and not opts.input_dir:
        yield (f"warning: the src faceset holds {len(sizes)} people; training on mixed identities gives a blurred, "
               "mixed face. Run the split_identities script and keep one person's folder")  # fmt: skip


def _add_identities(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    from facelab.detect.base import create_identity
    from facelab.detect.identity import stored_identity

    if (folder / PACK_NAME).exists():
        raise UserError(f"{folder} is packed: unpack it first (faceset_unpack), then add identities")
    good, bad = _faces_with_meta(folder)
    model = create_identity()
    added = kept = unreadable = 0
    for face in iterate(good, "identities", "face"):
        if stored_identity(face.meta, model) is not None:
            kept += 1
            continue
        img = decode_image(np.frombuffer(face.read_bytes(), np.uint8))
        if img is None:
            unreadable += 1
            continue
        emb = model.embed(img, [face.meta.landmarks])[0]
        write_meta(face.path, replace(face.meta, identity=tuple(round(float(v), 5) for v in emb), identity_model=model.key))
        added += 1
    yield from ()
    tail = (f", {kept} already had one" if kept else "") + (f", {unreadable + len(bad)} could not be read" if unreadable or bad else "")
    return f"identities ({model.key}) added to {added} faces of {folder}{tail}", {"added": added, "kept": kept}


def _split_identities(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    from facelab.core.identity import clusters
    from facelab.detect.identity import default_model, faceset_identities

    if (folder / PACK_NAME).exists():
        raise UserError(f"{folder} is packed: unpack it first (faceset_unpack), then split it")
    good, _ = _faces_with_meta(folder)
    emb, have, missing = faceset_identities(good, folder)
    labels = clusters(emb, default_model().threshold)
    groups = [[good[have[i]] for i in np.flatnonzero(labels == k)] for k in range(int(labels.max()) + 1)]
    outs = [_output_dir(folder, f"person_{k + 1}", opts.overwrite) for k in range(len(groups))]
    for out, group in zip(outs, groups):
        for old in list_images(out):
            old.unlink()
        for face in group:
            link_or_copy(face.path, out / face.name)
    yield from (f"{out.name}: {len(group)} faces" for out, group in zip(outs, groups))
    tail = f"; {len(missing)} faces without an identity were left out" if missing else ""
    return (f"{len(have)} faces of {folder} in {len(groups)} people: {', '.join(o.name for o in outs)} (copies; the faceset "
            f"is unchanged){tail}", {"people": len(groups), "faces": len(have)})  # fmt: skip


def contact_sheet(faces: list[Face], cell: int = 96, columns: int = 20, limit: int = 400) -> np.ndarray:
    """Up to `limit` faces, evenly spread over the set, as a grid of `cell` px thumbnails."""
    picks = [faces[int(i)] for i in np.linspace(0, len(faces) - 1, min(limit, len(faces)))] if faces else []
    rows = max(1, math.ceil(len(picks) / columns))
    sheet = np.full((rows * cell, min(columns, max(len(picks), 1)) * cell, 3), 32, np.uint8)
    for k, face in enumerate(picks):
        img = decode_image(face.read_bytes(), cv2.IMREAD_REDUCED_COLOR_4)
        if img is None:
            continue
        r, c = divmod(k, columns)
        sheet[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = cv2.resize(img, (cell, cell), interpolation=cv2.INTER_AREA)
    return sheet


# ---------------------------------------------------------------- simple utilities


def _landmarks_debug(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, bad = _faces_with_meta(folder)
    out = _output_dir(folder, "landmarks", opts.overwrite)
    for face in iterate(good, "landmark overlays", "face"):
        img = decode_image(face.read_bytes())
        lm = face.meta.landmarks
        rect = (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max()))
        draw_face_debug(img, rect, lm, None, img.shape[1])
        write_image_atomic(out / f"{Path(face.name).stem}.jpg", img, jpeg_quality=90)
    yield from ()
    return f"{len(good)} overlays -> {out}", {"faces": len(good), "skipped": len(bad)}


def _recover(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, bad = _faces_with_meta(folder)
    if any(f.path is None for f in good):
        raise UserError(f"{folder} is packed: unpack it first")
    plan: dict[str, list[Face]] = {}
    for face in sorted(good, key=lambda f: f.name):
        if face.meta.source_filename:
            plan.setdefault(Path(face.meta.source_filename).stem, []).append(face)
    moves, moving = [], {f.path.name for fs in plan.values() for f in fs}
    for stem, faces in plan.items():
        for n, face in enumerate(faces):
            final = folder / f"{stem}_{n}{face.path.suffix.lower()}"
            if final.exists() and final.name not in moving:  # a face without metadata has this name: keep both
                final = final.with_name(f"{final.stem}_recovered{final.suffix}")
            moves.append((face.path, final))
    rename_all(folder, moves, "recover-filenames")  # crash-safe: io.journal
    yield from ()
    return f"{len(moves)} faces of {folder} renamed back to <frame>_<n>", {"renamed": len(moves), "skipped": len(bad)}


def _export_masks(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, _ = _faces_with_meta(folder)
    out = _output_dir(folder, "masks", opts.overwrite)
    if opts.mask in LANDMARK_MASKS:
        made = 0
        for face in iterate(good, "masks", "face"):
            if face.shape:
                mask = LANDMARK_MASKS[opts.mask](face.shape, face.meta.landmarks)
                write_image_atomic(out / f"{Path(face.name).stem}.png", np.rint(mask[..., 0] * 255).astype(np.uint8))
                made += 1
        yield from ()
        return f"{made} {opts.mask} masks -> {out}", {"landmark": made}
    applied = drawn = 0
    for face in iterate(good, "masks", "face"):
        mask = face.meta.xseg_mask()
        if mask is not None:
            applied += 1
        elif face.meta.xseg_polygons and face.shape:
            mask = polygons_mask(face.shape, [(p.include, p.points) for p in face.meta.xseg_polygons])
            drawn += 1
        else:
            continue
        write_image_atomic(out / f"{Path(face.name).stem}.png", np.rint(mask[..., 0] * 255).astype(np.uint8))
    yield from ()
    return (f"{applied + drawn} masks -> {out} ({applied} applied XSeg masks, {drawn} from drawn polygons; "
            f"{len(good) - applied - drawn} faces have neither)", {"applied": applied, "drawn": drawn})  # fmt: skip


# ---------------------------------------------------------------- metadata save / restore


META_FILE_MAX_BYTES = 512 << 20  # about 3 KB a face: 150,000 faces


def _meta_save(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, bad = _faces_with_meta(folder)
    data = {"schema": "facelab.faceset-meta", "version": 1,
            "faces": {f.name: {"shape": list(f.shape) if f.shape else None, "meta": f.meta.to_dict()} for f in good}}  # fmt: skip
    write_text_atomic(folder / META_FILE, json.dumps(data))
    yield from ()
    return f"metadata of {len(good)} faces saved to {folder / META_FILE}", {"faces": len(good), "skipped": len(bad)}


def scale_meta(meta: FaceMeta, sx: float, sy: float) -> FaceMeta:
    """Metadata of the same face image scaled by (sx, sy)."""
    scale = np.array([sx, sy], np.float32)
    mat = None
    if meta.image_to_face_mat is not None:
        mat = np.diag([sx, sy]) @ meta.image_to_face_mat
    polys = tuple(XSegPolygon(p.include, (p.points * scale).astype(np.float32)) for p in meta.xseg_polygons)
    return replace(meta, landmarks=(meta.landmarks * scale).astype(np.float32), image_to_face_mat=mat, xseg_polygons=polys)


def _meta_restore(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    path = folder / META_FILE
    try:
        if path.stat().st_size > META_FILE_MAX_BYTES:
            raise UserError(f"{path} is over {META_FILE_MAX_BYTES >> 20} MB: not a metadata file FaceLab wrote")
        saved = json.loads(path.read_text(encoding="utf-8"))["faces"]
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the metadata save script before editing the faces") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UserError(f"{path} is damaged ({type(exc).__name__}: {str(exc)[:100]})") from None
    if not isinstance(saved, dict):
        raise UserError(f"{path} is damaged (its faces are not a table of names)")
    for name in saved:  # every name first: a crafted file changes nothing, not even the first faces
        plain_file_name(name, str(path))
    restored = resized = missing = 0
    for name, entry in iterate(list(saved.items()), "restore", "face"):
        target = folder / name
        if not target.exists():
            missing += 1
            continue
        try:
            meta = FaceMeta.from_dict(entry["meta"])
            shape = tuple(int(v) for v in entry["shape"])[:2] if entry.get("shape") else None
        except (FaceMetaError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{path} is damaged at {name} ({type(exc).__name__}: {exc}); nothing after it was restored") from None
        img = read_image(target)
        if img is None:
            missing += 1
            continue
        if shape is not None and img.shape[:2] != shape:
            resized += 1
            if opts.keep_size:
                meta = scale_meta(meta, img.shape[1] / shape[1], img.shape[0] / shape[0])
                write_meta(target, meta)
            else:
                back = cv2.resize(img, (shape[1], shape[0]), interpolation=cv2.INTER_LANCZOS4)
                write_face(target, back, meta, jpeg_quality=100)
        else:
            write_meta(target, meta)
        restored += 1
    yield from ()
    extra = f", {missing} listed faces not found" if missing else ""
    how = "metadata scaled to them" if opts.keep_size else "resized back"
    return (f"metadata restored into {restored} faces of {folder} ({resized} had changed size: {how}){extra}",
            {"restored": restored, "resized": resized, "missing": missing})  # fmt: skip


# ---------------------------------------------------------------- pack / unpack


def _pack(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    faces = load_faceset(folder)
    if not faces or all(f.path is None for f in faces):
        raise UserError(f"{folder} has no faces to pack (only loose face files are packed): extract faces first")
    pack = folder / PACK_NAME
    if pack.exists() and not opts.overwrite:
        raise ConfirmationNeeded(f"{pack} exists and will be replaced", "overwrite")
    if pack.exists() and not opts.replace_bigger:
        try:
            held = sum(1 for _ in read_pack(pack))
        except UserError:
            held = 0  # a damaged pack: replacing it loses nothing readable
        if held > len(faces):
            raise ConfirmationNeeded(f"{pack} holds {held} faces and would be replaced by a pack of only {len(faces)}",
                                     "replace_bigger")  # fmt: skip
    size = write_pack(faces, pack)
    # read everything back before deleting anything
    packed = {f.name: f.read_bytes() for f in read_pack(pack)}
    if len(packed) != len(faces) or any(packed[f.name] != f.read_bytes() for f in faces):
        raise UserError(f"{pack} did not read back identical to the faces: nothing was deleted")
    if opts.delete_originals:
        for f in faces:
            assert f.path is not None
            f.path.unlink()
    yield from ()
    kept = "" if opts.delete_originals else "; the loose files were kept"
    return f"{len(faces)} faces packed into {pack} ({size / 1e6:.1f} MB){kept}", {"faces": len(faces)}


def _unpack(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    """Unpack into `<folder>/.unpacking/` first, then move the faces in and remove the pack: a
    stop at any moment (disk full, kill) never leaves a partial set of loose faces hiding the pack;
    the stages refuse the folder until unpack is run again, which finishes the job."""
    pack, staging = folder / PACK_NAME, folder / UNPACKING
    if not pack.exists():
        if staging.is_dir() and all(p.name.endswith(".tmp") for p in staging.iterdir()):  # stopped after the pack was removed
            for p in staging.iterdir():
                p.unlink()
            staging.rmdir()
            yield from ()
            return f"an interrupted unpack of {folder} is finished", {"faces": 0}
        raise UserError(f"{folder} has no {PACK_NAME} to unpack")
    faces = list(read_pack(pack))
    resuming = staging.is_dir()
    for face in iterate(faces, "check pack", "face"):
        face.read_bytes()  # checks every face against the manifest before anything is written
    clashes = {f.name for f in faces if (folder / f.name).exists() and (folder / f.name).read_bytes() != f.read_bytes()}
    if clashes and not opts.overwrite:
        raise ConfirmationNeeded(f"{len(clashes)} files in {folder} differ from the packed ones and will be replaced", "overwrite")
    staging.mkdir(exist_ok=True)
    for face in iterate(faces, "unpack", "face"):
        if not (folder / face.name).exists() or face.name in clashes:
            write_bytes_atomic(staging / face.name, face.read_bytes())
    for face in faces:
        if (staging / face.name).exists():
            os.replace(staging / face.name, folder / face.name)
    for p in staging.iterdir():  # half-written temp files of a killed run; every face has been moved
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            p.unlink()
    pack.unlink()
    staging.rmdir()
    yield from ()
    again = " (an interrupted unpack finished)" if resuming else ""
    return f"{len(faces)} faces unpacked into {folder}; {PACK_NAME} removed{again}", {"faces": len(faces)}


# ---------------------------------------------------------------- resize


def resize_face(img: np.ndarray, meta: FaceMeta, size: int, face_type: FaceType | None) -> tuple[np.ndarray, FaceMeta]:
    """The face at `size` px (and `face_type`, re-framed through its source landmarks)."""
    h, w = img.shape[:2]
    new_type = face_type or meta.face_type
    if new_type != meta.face_type and (meta.image_to_face_mat is None or meta.source_landmarks is None):
        raise FaceMetaError("no source landmarks and matrix: the face type cannot be changed")
    m, new_mat = reframe_face(meta.face_type, new_type, size, (w, h), meta.image_to_face_mat, meta.source_landmarks)
    out = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_CONSTANT)
    polys = tuple(XSegPolygon(p.include, transform_points(p.points, m).astype(np.float32)) for p in meta.xseg_polygons)
    new_meta = replace(meta, face_type=new_type, landmarks=transform_points(meta.landmarks, m).astype(np.float32),
                       image_to_face_mat=new_mat, xseg_polygons=polys)  # fmt: skip
    mask = meta.xseg_mask()
    if mask is not None:
        mh, mw = mask.shape[:2]
        to_image = np.array([[w / mw, 0, 0], [0, h / mh, 0]])
        new_mask = cv2.warpAffine(mask[..., 0], compose_affine(m, to_image), (size, size), flags=cv2.INTER_LINEAR)
        new_meta = new_meta.with_xseg_mask(new_mask)
    return out, new_meta


def _resize(folder: Path, opts: FacesetOptions):  # noqa: ANN202
    good, bad = _faces_with_meta(folder)
    new_type = None if opts.face_type == "same" else FaceType.parse(opts.face_type)
    out = _output_dir(folder, "resized", opts.overwrite)
    done, skipped = 0, []
    for face in iterate(good, "resize", "face"):
        if face.meta.face_type == FaceType.MARK_ONLY:
            skipped.append(face.name)
            continue
        img = decode_image(face.read_bytes())
        try:
            new_img, new_meta = resize_face(img, face.meta, opts.image_size, new_type)
        except FaceMetaError:
            skipped.append(face.name)
            continue
        write_face(out / f"{Path(face.name).stem}.jpg", new_img, new_meta, jpeg_quality=95)
        done += 1
    yield from ()
    tail = f"; {len(skipped)} skipped (mark_only or no source landmarks)" if skipped else ""
    return (f"{done} faces resized to {opts.image_size} px ({new_type.dfl_name if new_type else 'same face type'}) -> {out}{tail}",
            {"resized": done, "skipped": len(skipped) + len(bad)})  # fmt: skip
