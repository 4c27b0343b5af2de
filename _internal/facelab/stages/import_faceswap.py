"""`facelab import-faceswap`: faceswap's extraction into `data_<side>/aligned/`, as our own faces.

Two sources, as a faceswap user has them (formats: `facelab.io.faceswap`):
- `--alignments FILE` (+ `--frames DIR`, default `data_<side>/`): faceswap's landmarks, often
  fixed by hand in its manual tool, become our faces cut from the frames with our framing
  (`--face-type`, `--image-size`), exactly as extraction cuts them. The way for dst, whose merge
  needs the frames anyway. Frames faceswap took from a video (`data_dst_000123.mp4`: the frame
  number from 1 and the video's extension) are found by number among ours (`00123.png`, as
  script 3 writes them), so its alignments of the video fit our frames of the same video.
- `--faces DIR`: faceswap's extracted PNGs alone (a src faceset without its frames). Their
  metadata holds the frame's landmarks but not the crop's matrix, so the crop is registered: its
  scale and rotation exactly, from faceswap's legacy alignment of the landmarks
  (`io.faceswap.legacy_matrix`), its position (which faceswap shifts by a head-pose offset from
  its own 3-D head model) from our landmarker's nose, eyes and mouth on the PNG: within a few
  pixels (on the reference faces at 256 px, 1.3 px on average, at most 4 px). The face is then
  re-framed from that PNG. `extra.faceswap_fit_px` records each face's residual.

The stored masks come across: the one `--mask` names (auto: a learned mask, else `extended`,
else `components`) is warped into the new crop and becomes the face's applied mask (what the
`xseg-*` merge modes and training's mask use); `extra.faceswap_mask` says which. Faces that
cannot be mapped (no frame, an unreadable PNG, a crop outside the picture) are counted and named.
A damaged or refused alignments file is one line before anything is written. A folder that
already holds faces is replaced only when asked (`--overwrite`), and the old faces go to
`aligned_trash/` rather than away.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from facelab.core.landmarks import FACE_TYPE_CHOICES, FaceType, compose_affine, get_transform_mat, transform_points, warp_face
from facelab.detect.base import Detection, IdentityModel, Landmarker
from facelab.errors import ConfirmationNeeded, UserError
from facelab.io.faceimage import FaceMeta, FaceMetaError, write_face
from facelab.io.faceset import move_to_trash
from facelab.io.faceswap import FsFace, FsMask, choose_mask, face_from_png_bytes, legacy_matrix, read_alignments
from facelab.io.frames import IMAGE_EXTENSIONS, decode_image, list_images, read_image
from facelab.log import progress
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

INNER = slice(27, 68)  # nose, eyes, mouth: where our landmarker and dlib's agree best (brows and jaw differ)


@dataclass(frozen=True)
class ImportFaceswapOptions:
    side: str = option("Side", "src", choices=("src", "dst"), ask=False, help="into data_src/aligned or data_dst/aligned")
    alignments: str = option("Alignments file", "", ask=False,
                             help="faceswap's alignments file (.fsa); the faces are cut from --frames")  # fmt: skip
    frames: str = option("Frames folder", "", ask=False,
                         help="the frames the alignments file describes (default: data_<side>/)")  # fmt: skip
    faces: str = option("faceswap faces folder", "", ask=False,
                        help="faceswap's extracted face PNGs, when you have no alignments file or frames")  # fmt: skip
    face_type: str = option("Face type", "wf", choices=FACE_TYPE_CHOICES, ask=False, help="our framing of the faces (as extraction's)")
    image_size: int = option("Image size", 0, min=0, max=2048, ask=False, help="side of the faces in pixels; 0 = 512 (768 for head)")
    mask: str = option("Mask", "auto", ask=False,
                       help="which stored faceswap mask becomes the applied mask: auto (a learned one, else extended, "
                            "else components), a mask name, or none")  # fmt: skip
    jpeg_quality: int = option("Jpeg quality", 90, min=1, max=100, ask=False, help="quality of the aligned JPEG files")
    identity: bool = option("Identities", True, ask=False,
                            help="store who each face is, as extraction does (about 0.1 s a face on a CPU); "
                                 "--no-identity skips it (add-identities can do it later)")  # fmt: skip
    overwrite: bool = option("Replace", False, ask=False,
                             help="replace faces already in the aligned folder (they go to aligned_trash)")  # fmt: skip


@dataclass
class _Counts:
    faces: int = 0
    masks: int = 0


def import_faceswap(ws: Workspace, opts: ImportFaceswapOptions) -> Report:
    started = time.perf_counter()
    ws.require()
    side = opts.side  # type: ignore[assignment]
    if bool(opts.alignments) == bool(opts.faces):
        raise UserError("give faceswap's alignments file (--alignments FILE, with --frames DIR) or its faces folder "
                        "(--faces DIR), one of the two")  # fmt: skip
    face_type = FaceType.parse(opts.face_type)
    if face_type == FaceType.MARK_ONLY:
        raise UserError("mark_only faces have no crop: choose h, mf, f, wf or head")
    size = opts.image_size or (768 if face_type == FaceType.HEAD else 512)
    if size < 64:
        raise UserError(f"image size {size} is too small: use 64-2048 (or 0 for the default)")
    aligned = ws.aligned_dir(side)
    if opts.alignments:
        jobs, frames_dir = _alignment_jobs(ws, opts, side)
    else:
        jobs, frames_dir = _png_jobs(opts), None
    _make_room(aligned, opts.overwrite)
    aligned.mkdir(parents=True, exist_ok=True)
    counts, missed = _Counts(), []
    from facelab.detect.base import create_identity, create_landmarker

    identity = create_identity() if opts.identity else None
    landmarker = create_landmarker("facemesh68") if opts.faces else None  # places faceswap's PNGs
    for job in progress(jobs, desc="import faceswap", unit="face"):
        try:
            counts.masks += _import_one(job, face_type, size, opts, aligned, frames_dir, identity, landmarker)
            counts.faces += 1
        except _Unmapped as exc:
            missed.append(str(exc))
    for line in missed[:20]:
        log.warning("not imported: %s", line)
    summary = (f"{counts.faces} faces from faceswap into {aligned} ({face_type.code}, {size} px), "
               f"{counts.masks} with an applied faceswap mask")  # fmt: skip
    if missed:
        more = f" (and {len(missed) - 3} more)" if len(missed) > 3 else ""
        summary += f"; {len(missed)} not mapped: " + "; ".join(missed[:3]) + more
    return Report("import-faceswap", summary, time.perf_counter() - started,
                  {"faces": counts.faces, "masks": counts.masks, "not_mapped": len(missed)})  # fmt: skip


class _Unmapped(Exception):
    """A face that cannot be imported (named in the summary)."""


@dataclass(frozen=True)
class _Job:
    face: FsFace | None  # from the alignments file; None for a PNG, read when its turn comes
    png: Path | None = None
    frame: Path | None = None  # our frame of an alignments face (None: not found)


def _alignment_jobs(ws: Workspace, opts: ImportFaceswapOptions, side: str) -> tuple[list[_Job], Path]:
    path = Path(opts.alignments).expanduser()
    if not path.is_file():
        raise UserError(f"the alignments file {path} does not exist: give faceswap's .fsa file")
    frames_dir = Path(opts.frames).expanduser() if opts.frames else ws.frames_dir(side)  # type: ignore[arg-type]
    if not frames_dir.is_dir():
        raise UserError(f"the frames folder {frames_dir} does not exist: give the folder faceswap extracted from (--frames)")
    try:
        table = read_alignments(path)
    except FaceMetaError as exc:
        raise UserError(f"{exc}; nothing was imported") from None
    find = frame_finder(frames_dir)
    jobs = [_Job(face, frame=find(frame)) for frame in sorted(table) for face in table[frame]]
    if not jobs:
        raise UserError(f"{path} holds no faces: nothing to import")
    return jobs, frames_dir


def frame_finder(frames_dir: Path):  # noqa: ANN201
    """name -> our frame for it: the file of that name, else, for a frame faceswap took from a
    video (`<video>_000123.<video extension>`, numbered from 1), our frame of that number (`00123.png`, as
    `3_extract_images_dst` numbers them)."""
    numbered = {int(p.stem): p for p in list_images(frames_dir) if p.stem.isdigit()}

    def find(name: str) -> Path | None:
        if (frames_dir / name).is_file():
            return frames_dir / name
        m = re.search(r"_(\d+)$", Path(name).stem)
        return numbered.get(int(m.group(1))) if m else None

    return find


def _png_jobs(opts: ImportFaceswapOptions) -> list[_Job]:
    folder = Path(opts.faces).expanduser()
    files = list_images(folder, (".png",))
    if not files:
        raise UserError(f"{folder} has no PNG faces: give the folder faceswap wrote its extracted faces to")
    return [_Job(None, png) for png in files]


def _make_room(aligned: Path, overwrite: bool) -> None:
    existing = list_images(aligned, IMAGE_EXTENSIONS)
    if not existing:
        return
    if not overwrite:
        raise ConfirmationNeeded(f"{aligned} already holds {len(existing)} faces; replace them with the import "
                                 "(they go to aligned_trash)?", "overwrite")  # fmt: skip
    for path in existing:
        move_to_trash(path)


def _import_one(job: _Job, face_type: FaceType, size: int, opts: ImportFaceswapOptions, aligned: Path,
                frames_dir: Path | None, identity: IdentityModel | None, landmarker: Landmarker | None) -> int:  # fmt: skip
    """Write one face; 1 when it got an applied mask. Raises _Unmapped with the reason."""
    if job.png is not None:
        assert landmarker is not None
        face, picture, mat_frame_to_picture, fit = _registered_png(job.png, landmarker)
        extra = {"faceswap_png": job.png.name, "faceswap_fit_px": round(fit, 2)}
    else:
        face = job.face
        assert face is not None and frames_dir is not None
        picture = read_image(job.frame) if job.frame is not None else None
        if picture is None:
            raise _Unmapped(f"{face.frame} face {face.index}: the frame is not in {frames_dir}")
        mat_frame_to_picture = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        extra = {"faceswap_frame": face.frame} if job.frame.name != face.frame else {}
    lm = face.landmarks.astype(np.float64)
    mat = get_transform_mat(lm, size, face_type)
    mat_picture_to_face = compose_affine(mat, cv2.invertAffineTransform(mat_frame_to_picture))
    corners = transform_points(np.array([[0, 0], [size, size]], np.float64), mat_picture_to_face, invert=True)
    h, w = picture.shape[:2]
    centre = corners.mean(0)
    if not (0 <= centre[0] < w and 0 <= centre[1] < h):
        raise _Unmapped(f"{face.frame} face {face.index}: the face lies outside its picture")
    x, y, bw, bh = face.box_xywh
    chosen = None if opts.mask == "none" else choose_mask(face, opts.mask)
    frame_name = job.frame.name if job.frame is not None else face.frame  # merging finds the face by it
    meta = FaceMeta(
        face_type=face_type,
        landmarks=transform_points(lm, mat).astype(np.float32),
        source_filename=frame_name,
        source_rect=np.array([x, y, x + bw, y + bh], np.float64),
        source_landmarks=face.landmarks,
        image_to_face_mat=mat,
        extra={"imported_from": "faceswap", "faceswap_face_index": face.index, **extra,
               **({"faceswap_mask": chosen.name} if chosen is not None else {})},
    )  # fmt: skip
    if chosen is not None:
        meta = meta.with_xseg_mask(mask_in_face(chosen, mat, size))
    if identity is not None:  # from the face as the picture shows it: faceswap's points carried onto it
        embedding = identity.embed(picture, [transform_points(lm, mat_frame_to_picture)])[0]
        meta = replace(meta, identity=tuple(round(float(v), 5) for v in embedding), identity_model=identity.key)
    name = f"{Path(frame_name).stem}_{face.index}.jpg"
    write_face(aligned / name, warp_face(picture, mat_picture_to_face, size), meta, opts.jpeg_quality)
    return int(chosen is not None)


def mask_in_face(mask: FsMask, mat_frame_to_face: np.ndarray, size: int) -> np.ndarray:
    """A stored faceswap mask warped into our `size` crop: size x size uint8 (0 outside the mask's area)."""
    mat = compose_affine(mat_frame_to_face, cv2.invertAffineTransform(mask.mat_frame_to_mask))
    return cv2.warpAffine(mask.mask_u8, mat, (size, size), flags=mask.interpolator, borderMode=cv2.BORDER_CONSTANT)


def _registered_png(path: Path, landmarker: Landmarker) -> tuple[FsFace, np.ndarray, np.ndarray, float]:
    """(face, PNG pixels, frame -> PNG matrix, residual px) for one of faceswap's face PNGs."""
    try:
        data = path.read_bytes()
        face = face_from_png_bytes(data, path.name)
    except (OSError, FaceMetaError) as exc:
        raise _Unmapped(str(exc)) from None
    picture = decode_image(data)
    if picture is None:
        raise _Unmapped(f"{path.name}: the picture cannot be decoded")
    mat, fit = register_face_png(picture, face, landmarker)
    if mat is None:
        raise _Unmapped(f"{path.name}: no face found in the picture to place faceswap's landmarks on")
    return face, picture, mat, fit


def register_face_png(picture: np.ndarray, face: FsFace, landmarker: Landmarker) -> tuple[np.ndarray | None, float]:
    """The frame -> PNG similarity of one faceswap face PNG, and the RMS distance (px) between our
    landmarker's points and faceswap's mapped through it.

    Scale and rotation are exact: faceswap crops a face with its legacy alignment (`legacy_matrix`)
    scaled by the crop's unpadded side (extraction writes "head"-centred crops at coverage 1.0:
    padding = size x 0.625 / 2, rounded) and only shifts it for the head's pose. That shift comes
    from faceswap's own 3-D head model, which FaceLab does not have: it is measured instead, as
    the mean offset between faceswap's points so mapped and our landmarker's on the PNG (nose,
    eyes, mouth)."""
    lm = face.landmarks.astype(np.float64)
    side = picture.shape[0]
    unpadded = side - 2 * round(side * 0.625 / 2)
    legacy = legacy_matrix(lm)
    linear = legacy[:, :2] * unpadded
    guess = np.hstack([linear, (legacy[:, 2] * unpadded + (side - unpadded) / 2)[:, None]])  # no pose offset yet
    pts = transform_points(lm, guess)
    found = landmarker.landmarks(picture, [Detection((*pts.min(0), *pts.max(0)), 1.0)])[0]
    if found is None:
        return None, float("inf")
    found = np.asarray(found, np.float64)
    shift = (found[INNER] - lm[INNER] @ linear.T).mean(0)
    mat = np.hstack([linear, shift[:, None]])
    residual = transform_points(lm[INNER], mat) - found[INNER]
    return mat, float(np.sqrt((residual**2).sum(1).mean()))
