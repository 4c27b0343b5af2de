"""Scripts 4 and 5: frames -> aligned faces (+ debug overlays), as dfl-spec §5, faster and safer.

Differences from DFL, on purpose:
- a pipeline instead of batch-1 worker processes: frames are decoded ahead in threads, faces are
  found on the main thread in batches of frames, and warping + JPEG encoding + writing run in a thread pool behind
  bounded queues (OpenCV releases the GIL), so both cores stay busy;
- the crop really is Lanczos (DFL's flag landed in `dst` and it warped bilinearly);
- resumable: `aligned/.facelab_extract.json` records the settings and the last frame completed in
  order, and a re-run continues after it (DFL wiped the folder below 128 faces); faces you
  deleted by hand stay deleted;
- optional zero-lag temporal smoothing of the alignment for video (`core.tracking`);
- every face records its track id, detector and score.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import cv2
import numpy as np

from facelab.core.identity import TrackIdentities, nearest
from facelab.core.landmarks import (
    FACE_TYPE_CHOICES, FaceType, compose_affine, get_rect_from_landmarks, get_transform_mat, transform_points, warp_face,
)  # fmt: skip
from facelab.core.overlay import draw_face_debug
from facelab.core.tracking import link_tracks, smooth_track
from facelab.detect.base import Detection, create_detector, create_landmarker, list_detectors, list_landmarkers
from facelab.errors import ConfirmationNeeded, UserError
from facelab.io.faceimage import FaceMeta, write_face
from facelab.io.faceset import load_faceset
from facelab.io.frames import list_images, read_image, write_image_atomic, write_text_atomic
from facelab.log import progress
from facelab.options import option
from facelab.pieces import Pieces, join_lists
from facelab.report import Report
from facelab.types import ImageBGR
from facelab.ui import can_show_windows
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

STATE_FILE = ".facelab_extract.json"
PREFETCH = 8
BATCH = 8  # frames per detector/landmarker call (the torch plugins run them as one batch)
WRITE_QUEUE = 16
SMOOTH_RADIUS = 2
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ExtractOptions:
    side: str = option("Side", "src", choices=("src", "dst"), ask=False, help="which frames: data_src or data_dst")
    face_type: str = option(
        "Face type", "wf", choices=FACE_TYPE_CHOICES,
        help="how much of the head the crop holds: h half, mf mid-full, f full, wf whole face "
        "(forehead too), head",
    )  # fmt: skip
    max_faces: int = option("Max number of faces from image", 0, min=0, max=100,
                            help="keep only the N largest faces of each frame; 0 = all")  # fmt: skip
    image_size: int = option("Image size", 0, min=0, max=2048,
                             help="side of the aligned face in pixels, 256-2048; 0 = 512 (768 for head)")  # fmt: skip
    jpeg_quality: int = option("Jpeg quality", 90, min=1, max=100, help="quality of the aligned JPEG files")
    output_debug: bool = option("Write debug images to aligned_debug?", False,
                                ask=lambda v: v["side"] == "src",
                                help="one overlay per frame: landmarks, detector box and crop outline")  # fmt: skip
    smooth_landmarks: bool = option("Smooth landmarks over time", False, ask=False,
                                    help="for video: steadier crops, no lag (on for data_dst in script 5)")  # fmt: skip
    detector: str = option("Detector", "blazeface", choices=(*list_detectors(), "manual"), ask=False,
                           help="face detector; manual = click each face")  # fmt: skip
    landmarker: str = option("Landmarker", "facemesh68", choices=tuple(list_landmarkers()), ask=False,
                             help="68-point landmark model")  # fmt: skip
    detector_weights: str = option("Detector weights", "", ask=False, help="weights file for s3fd (S3FD.npy or .pth)")
    landmarker_weights: str = option("Landmarker weights", "", ask=False,
                                     help="weights file for fan (2DFAN.npy or .pth) or dlib68 (.dat)")  # fmt: skip
    device: str = option("Device", "auto", ask=False, help="auto, cpu, cuda, cuda:1, mps (torch plugins)")
    manual_fix: bool = option("Manual fix", False, ask=False, help="then place faces by hand on frames with none")
    manual_reextract_deleted_debug: bool = option(
        "Re-extract deleted debug", False, ask=False,
        help="re-extract by hand the frames whose aligned_debug image you deleted",
    )  # fmt: skip
    edit_landmarks: bool = option("Edit landmarks", False, ask=False,
                                  help="open the landmark editor on the faces already in aligned/ (after the debug review): "
                                       "drag points, Enter re-cuts the face from them, Space leaves it")  # fmt: skip
    overwrite: bool = option("Start over", False, ask=False,
                             help="delete faces already extracted (with other settings) without asking")  # fmt: skip
    identity: bool = option("Identities", True, ask=False,
                            help="store who each face is (for sort --by face, split-identities, merge --reference); "
                                 "--no-identity skips it")  # fmt: skip
    reference: str = option("Reference", "", ask=False,
                            help="keep only this person's faces: a photo, a folder of photos, or an aligned faceset")
    reference_threshold: float = option("Reference threshold", 0.6, min=0.2, max=1.2, ask=False,
                                        help="how far from the reference a face may be and still count as that person "
                                             "(0.6, dlib's usual); higher keeps more faces, look-alikes too; lower keeps fewer")  # fmt: skip


IDENTITY_EVERY = {"src": 1, "dst": 8}  # frames between fresh embeddings along a track (src: photos, every face)


@dataclass
class _Face:
    det: Detection
    landmarks: np.ndarray  # frame px
    track: int = -1
    identity: np.ndarray | None = None
    identity_from: str = ""  # the frame whose face the embedding was computed on
    other_person: bool = False  # not the --reference person: not written


@dataclass
class _Frame:
    path: Path
    image: ImageBGR | None
    faces: list[_Face] = field(default_factory=list)


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T], depth: int) -> Iterator[tuple[T, R]]:
    """`(item, fn(item))` in order, computing up to `depth` items ahead in `pool`."""
    it = iter(items)
    queue: deque[tuple[T, Future]] = deque((x, pool.submit(fn, x)) for x in islice(it, depth))
    while queue:
        item, fut = queue.popleft()
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))
        yield item, fut.result()


def _resolved_size(opts: ExtractOptions, face_type: FaceType) -> int:
    if opts.image_size == 0:
        return 768 if face_type == FaceType.HEAD else 512
    if opts.image_size < 256:
        raise UserError(f"image size {opts.image_size} is too small: use 256-2048 (or 0 for the default)")
    return opts.image_size


def _settings_key(job: _Job) -> dict:
    """The settings a resumed run must share with the run it continues."""
    opts = job.opts
    return {"face_type": job.face_type.dfl_name, "image_size": job.size, "detector": opts.detector,
            "landmarker": opts.landmarker, "max_faces": opts.max_faces, "identity": opts.identity or bool(opts.reference),
            "reference": opts.reference, "reference_threshold": opts.reference_threshold}  # fmt: skip


def keep_faces(
    dets: list[Detection], landmarks: list[np.ndarray | None], face_type: FaceType, max_faces: int
) -> list[_Face]:
    """Pair detections with their landmarks, drop failures, largest first, at most `max_faces`."""
    found = []
    for det, lm in zip(dets, landmarks):
        if lm is None:
            continue
        if face_type <= FaceType.FULL_NO_ALIGN:
            # DFL's sanity check: a crop far larger than the detector box means broken landmarks
            square = transform_points(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float),
                                      get_transform_mat(lm, 1, face_type), invert=True)  # fmt: skip
            x, y = square[:, 0], square[:, 1]
            area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
            if area > 4 * det.area:
                continue
        found.append(_Face(det, np.asarray(lm, np.float32)))
    found.sort(key=lambda f: -f.det.area)
    return found[:max_faces] if max_faces else found


def _smoothed(window: list[_Frame], centre: int, face: _Face, radius: int) -> np.ndarray:
    """The face's landmarks smoothed with the same track in up to `radius` frames each side."""

    def track_points(frames: Iterable[_Frame]) -> list[np.ndarray]:
        pts = []
        for fr in frames:
            match = next((f for f in fr.faces if f.track == face.track), None)
            if match is None:
                break
            pts.append(match.landmarks)
        return pts

    before = track_points(reversed(window[:centre]))
    after = track_points(window[centre + 1 :])
    k = min(radius, len(before), len(after))
    if k == 0:
        return face.landmarks
    seq = list(reversed(before[:k])) + [face.landmarks] + after[:k]
    return smooth_track(seq, radius=k)[k]


class _FaceWriter:
    """Warps, encodes and writes one frame's faces (+ its debug overlay); thread-safe."""

    def __init__(self, opts: ExtractOptions, face_type: FaceType, size: int, aligned_dir: Path, debug_dir: Path):
        self.opts, self.face_type, self.size = opts, face_type, size
        self.aligned_dir, self.debug_dir = aligned_dir, debug_dir
        self.identity_key = ""  # set when identities are computed

    def write(self, path: Path, image: ImageBGR, faces: list[_Face], landmarks: list[np.ndarray]) -> int:
        opts = self.opts
        debug = image.copy() if opts.output_debug else None
        kept = [(f, lm) for f, lm in zip(faces, landmarks) if not f.other_person]
        for i, (face, lm) in enumerate(kept):
            mat = get_transform_mat(lm, self.size, self.face_type)
            extra = {"detector": opts.detector, "landmarker": opts.landmarker, "score": round(face.det.score, 4)}
            if face.identity_from and face.identity_from != path.name:
                extra["identity_from"] = face.identity_from  # sampled along the track
            meta = FaceMeta(
                face_type=self.face_type,
                landmarks=transform_points(lm, mat).astype(np.float32),
                source_filename=path.name,
                source_rect=np.array(face.det.rect, np.float64),
                source_landmarks=lm,
                image_to_face_mat=mat,
                track_id=face.track,
                extra=extra,
                identity=None if face.identity is None else tuple(round(float(v), 5) for v in face.identity),
                identity_model=self.identity_key if face.identity is not None else None,
            )
            write_face(self.aligned_dir / f"{path.stem}_{i}.jpg", warp_face(image, mat, self.size), meta, opts.jpeg_quality)
            if debug is not None:
                draw_face_debug(debug, face.det.rect, lm, mat, self.size)
        if debug is not None:
            write_image_atomic(self.debug_dir / f"{path.stem}.jpg", debug, jpeg_quality=50)
        return len(kept)


@dataclass
class Counts:
    frames: int = 0
    faces: int = 0
    no_face: int = 0
    unreadable: int = 0
    manual: int = 0
    other_faces: int = 0  # not the --reference person
    person_missed: int = 0  # frames where the --reference person was not found


@dataclass
class _Job:
    """What every step of one extraction needs: the settings, the folders, the writer, the counts."""

    opts: ExtractOptions
    face_type: FaceType
    size: int
    frames_dir: Path
    aligned_dir: Path
    debug_dir: Path
    writer: _FaceWriter
    counts: Counts = field(default_factory=Counts)


def extract(ws: Workspace, opts: ExtractOptions) -> Report:
    """`data_<side>/*.png|jpg` -> `data_<side>/aligned/<stem>_<i>.jpg` (+ `aligned_debug/<stem>.jpg`)."""
    started = time.perf_counter()
    job, frames = _prepare(ws, opts)
    report = lambda summary: Report("extract", summary, time.perf_counter() - started, asdict(job.counts))  # noqa: E731
    if opts.manual_reextract_deleted_debug:
        return report(_reextract_deleted_debug(job, frames))
    if opts.edit_landmarks:
        return report(_edit_landmarks(job))
    manual_only = opts.detector == "manual"
    resume_after = _resume_point(job, manual_only)
    if manual_only:
        _manual_faces(frames, job)
        return report(f"{job.counts.faces} faces placed by hand on {len(frames)} frames -> {job.aligned_dir}")
    todo = [p for p in frames if resume_after is None or p.name > resume_after]
    if resume_after and todo:
        log.info("continuing after %s: %d of %d frames left", resume_after, len(todo), len(frames))
    unreadable = _auto_pass(job, todo, resume_after) if todo else []
    if opts.manual_fix:
        have = {p.stem.rsplit("_", 1)[0] for p in list_images(job.aligned_dir)}
        missing = [f for f in frames if f.stem not in have and f.name not in unreadable]
        if missing:
            _manual_faces(missing, job)
    if not todo and not job.counts.manual:
        return report(f"all {len(frames)} frames were already extracted into {job.aligned_dir} (--overwrite starts over)")
    job.counts.unreadable = len(unreadable)
    return report(_summary(job, unreadable))


def _prepare(ws: Workspace, opts: ExtractOptions) -> tuple[_Job, list[Path]]:
    """Check the settings and the frames; make the output folders and the writer."""
    ws.require()
    face_type = FaceType.parse(opts.face_type)
    size = _resolved_size(opts, face_type)
    side = opts.side  # type: ignore[assignment]
    frames_dir, aligned_dir, debug_dir = ws.frames_dir(side), ws.aligned_dir(side), ws.aligned_debug_dir(side)
    reextract = opts.manual_reextract_deleted_debug
    if (opts.detector == "manual" or reextract or opts.manual_fix or opts.edit_landmarks) and not can_show_windows():
        raise UserError("manual extraction opens a window and this machine has no display: run it on your desktop")
    if opts.reference and not Path(opts.reference).expanduser().exists():
        raise UserError(f"the reference {opts.reference} does not exist: give a photo of the person, a folder of photos, "
                        "or an aligned faceset")  # fmt: skip
    if opts.reference and Path(opts.reference).expanduser().resolve().is_relative_to(aligned_dir.resolve()):
        raise UserError(f"the reference {opts.reference} is inside {aligned_dir}, which this extraction rewrites: "
                        "copy the reference faces elsewhere first")  # fmt: skip
    frames = list_images(frames_dir)
    if not frames:
        raise UserError(f"{frames_dir} has no frames: run {'2_extract_images_src' if side == 'src' else '3_extract_images_dst'} first")
    aligned_dir.mkdir(parents=True, exist_ok=True)
    if opts.output_debug or reextract:
        debug_dir.mkdir(parents=True, exist_ok=True)
    writer = _FaceWriter(opts if not reextract else replace(opts, output_debug=True), face_type, size, aligned_dir, debug_dir)
    return _Job(opts, face_type, size, frames_dir, aligned_dir, debug_dir, writer), frames


def _reextract_deleted_debug(job: _Job, frames: list[Path]) -> str:
    """Script 5_dst_manual_reextract_deleted_debug: place by hand the faces of the frames whose
    aligned_debug image the user deleted (their old faces are removed first)."""
    targets = [f for f in frames if not (job.debug_dir / f"{f.stem}.jpg").exists()]
    if not targets:
        return f"every frame of {job.frames_dir} still has its aligned_debug image: nothing to re-extract"
    for f in targets:
        for old in job.aligned_dir.glob(f"{f.stem}_*.jpg"):
            old.unlink()
    _manual_faces(targets, job)
    return f"{job.counts.faces} faces placed by hand on {len(targets)} frames whose debug image was deleted"


def _edit_landmarks(job: _Job) -> str:
    """`--edit-landmarks`: each aligned face on its frame in the manual window, with its stored
    points; a face accepted with moved points is re-cut from the frame with them (`refit_face`)."""
    faces = [f for f in load_faceset(job.aligned_dir)
             if f.path is not None and f.meta is not None and f.meta.source_landmarks is not None and f.meta.source_filename
             and f.meta.face_type != FaceType.MARK_ONLY and (job.frames_dir / f.meta.source_filename).is_file()]  # fmt: skip
    if not faces:
        raise UserError(f"{job.aligned_dir} has no faces whose frame is in {job.frames_dir}: extract faces first")
    metas: dict[str, FaceMeta] = {f.name: f.meta for f in faces}  # type: ignore[misc]
    initial = {name: (_source_rect(meta), meta.source_landmarks) for name, meta in metas.items()}
    from facelab.ui import manual  # Qt is imported only when a window is really opened

    frames = [job.frames_dir / f.meta.source_filename for f in faces]  # type: ignore[union-attr]
    results = manual.run_manual_pass(frames, _landmarker_factory(job.opts), job.face_type, job.size, initial,
                                     keys=[f.name for f in faces])  # fmt: skip
    edited: list[Path] = []  # the frame of each re-cut face
    for face, frame_path in zip(faces, frames):
        placed = results.get(face.name)
        if placed is None or np.array_equal(placed[1], initial[face.name][1]):
            continue
        image = read_image(frame_path)
        if image is None:
            continue
        size = face.shape[0] if face.shape else job.size  # (height, width) from the file's header
        new_img, metas[face.name] = refit_face(image, size, metas[face.name], np.asarray(placed[1], np.float32))
        write_face(face.path, new_img, metas[face.name], job.opts.jpeg_quality)  # type: ignore[arg-type]
        edited.append(frame_path)
    for frame_path in set(edited):  # the debug review shows the frame's faces as they now are
        if (job.debug_dir / f"{frame_path.stem}.jpg").exists() and (image := read_image(frame_path)) is not None:
            for face, path in zip(faces, frames):
                if path == frame_path:
                    meta = metas[face.name]
                    draw_face_debug(image, _source_rect(meta), meta.source_landmarks, meta.image_to_face_mat,
                                    face.shape[0] if face.shape else job.size)  # fmt: skip
            write_image_atomic(job.debug_dir / f"{frame_path.stem}.jpg", image, jpeg_quality=50)
    return f"{len(edited)} of {len(faces)} faces in {job.aligned_dir} re-cut from edited landmarks"


def _source_rect(meta: FaceMeta) -> tuple[float, float, float, float]:
    """The face's detector box in its frame (from the landmarks when none was stored)."""
    rect = meta.source_rect if meta.source_rect is not None else get_rect_from_landmarks(meta.source_landmarks)
    return tuple(float(v) for v in rect)  # type: ignore[return-value]


def refit_face(frame: ImageBGR, size: int, meta: FaceMeta, landmarks: np.ndarray) -> tuple[ImageBGR, FaceMeta]:
    """A face re-cut from `frame` with new frame-space `landmarks`: its crop and matrix follow
    them, its hand-drawn polygons and applied mask are carried into the new crop."""
    assert meta.image_to_face_mat is not None
    mat = get_transform_mat(landmarks, size, meta.face_type)
    old_to_new = compose_affine(mat, cv2.invertAffineTransform(meta.image_to_face_mat))
    polygons = tuple(replace(p, points=transform_points(p.points, old_to_new).astype(np.float32)) for p in meta.xseg_polygons)
    new = replace(meta, landmarks=transform_points(landmarks, mat).astype(np.float32), source_landmarks=landmarks,
                  image_to_face_mat=mat, xseg_polygons=polygons, extra={**meta.extra, "landmarks_edited": True})  # fmt: skip
    mask = meta.xseg_mask()
    if mask is not None:  # stored at its own size (256 after apply): through the face's pixels and back
        mh, mw = mask.shape[:2]
        to_face = np.array([[size / mw, 0, 0], [0, size / mh, 0]])
        back = np.array([[mw / size, 0, 0], [0, mh / size, 0]])
        warp = compose_affine(back, compose_affine(old_to_new, to_face))
        new = new.with_xseg_mask(cv2.warpAffine(mask[..., 0], warp, (mw, mh), flags=cv2.INTER_LINEAR))
    return warp_face(frame, mat, size), new


def _resume_point(job: _Job, manual_only: bool) -> str | None:
    """The last frame a compatible earlier run completed (None: start over). Faces extracted
    with other settings are deleted, after a confirmation (`--overwrite` headless)."""
    opts, state_path = job.opts, job.aligned_dir / STATE_FILE
    state = _load_state(state_path)
    existing = list_images(job.aligned_dir)
    resume_after = None
    if not opts.overwrite and not manual_only and state is not None and state.get("settings") == _settings_key(job):
        resume_after = state.get("done_through")
    elif existing and not opts.overwrite:
        why = "with other settings" if state is not None else "by an earlier run or another tool"
        raise ConfirmationNeeded(
            f"{job.aligned_dir} already holds {len(existing)} faces extracted {why}, which will be deleted", "overwrite"
        )
    if opts.overwrite or resume_after is None:
        for p in existing + list_images(job.debug_dir):
            p.unlink()
        state_path.unlink(missing_ok=True)
    return resume_after


def _summary(job: _Job, unreadable: list[str]) -> str:
    c = job.counts
    summary = (
        f"{c.faces} faces from {c.frames} frames -> {job.aligned_dir}"
        f" ({job.face_type.dfl_name}, {job.size} px); {c.no_face} frames without a face"
    )
    if job.opts.reference:
        summary = (f"kept {c.faces} faces of the reference person, skipped {c.other_faces} other faces; "
                   f"the person was not found in {c.person_missed} of {c.frames} frames") + summary[summary.index(" -> "):]  # fmt: skip
    if c.manual:
        summary += f"; {c.manual} placed by hand"
    if unreadable:
        shown = ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
        summary += f"; {len(unreadable)} unreadable frames skipped: {shown}"
    return summary


def _landmarker_factory(opts: ExtractOptions) -> Callable[[bool], object]:
    """The manual window's landmarkers, made on first use: accurate (two passes and the mirrored crop) or not."""
    landmarkers: dict[bool, object] = {}

    def landmarker_for(accurate: bool):  # noqa: ANN202
        if accurate not in landmarkers:
            extra = {"passes": 2 if accurate else 1, "flip": accurate} if opts.landmarker == "facemesh68" else {}
            landmarkers[accurate] = create_landmarker(
                opts.landmarker, weights=opts.landmarker_weights or None, device=opts.device, **extra
            )
        return landmarkers[accurate]

    return landmarker_for


def _manual_faces(frames: list[Path], job: _Job) -> None:
    """Open the manual window on `frames` and write the faces placed there."""
    opts = job.opts
    from facelab.ui import manual  # Qt is imported only when a window is really opened

    results = manual.run_manual_pass(frames, _landmarker_factory(opts), job.face_type, job.size)
    identity = None
    if opts.identity and results:
        from facelab.detect.base import create_identity

        identity = create_identity()
        job.writer.identity_key = identity.key
    for path in frames:
        placed = results.get(path.name)
        if placed is None:
            continue
        image = read_image(path)
        if image is None:
            continue
        rect, lm = placed
        face = _Face(Detection(rect, 1.0), lm)
        if identity is not None:  # a face placed by hand is its own track: its identity is its own
            face.identity = identity.embed(image, [lm])[0]
        job.counts.faces += job.writer.write(path, image, [face], [lm])
        job.counts.manual += 1


class _Writes:
    """The frames handed to the writer threads, oldest first; records in order which frame was
    the last one completed (the resume point in `aligned/.facelab_extract.json`)."""

    def __init__(self, job: _Job, pool: ThreadPoolExecutor, done_through: str | None, radius: int):
        self.job, self.pool, self.radius = job, pool, radius
        self.state_path, self.key = job.aligned_dir / STATE_FILE, _settings_key(job)
        self.queue: deque[tuple[str, Future]] = deque()
        self.done_through = done_through
        _save_state(self.state_path, self.key, done_through)  # at once: a disk that fills later still resumes
        self.last_saved = time.monotonic()

    def submit(self, window: list[_Frame], centre: int) -> None:
        """Write frame `centre` of the window (its landmarks smoothed with its neighbours)."""
        frame = window[centre]
        image, frame.image = frame.image, None  # the writer owns the pixels from here
        if image is None:  # unreadable frame
            fut = _done(0)
        else:
            r = self.radius
            lms = [_smoothed(window, centre, f, r) if r else f.landmarks for f in frame.faces]
            fut = self.pool.submit(self.job.writer.write, frame.path, image, list(frame.faces), lms)
        self.queue.append((frame.path.name, fut))
        self.settle(WRITE_QUEUE)

    def settle(self, limit: int) -> None:
        """Wait for the oldest writes until at most `limit` are in flight; record progress."""
        while len(self.queue) > limit:
            name, fut = self.queue.popleft()
            self.job.counts.faces += fut.result()
            self.done_through = name
        if time.monotonic() - self.last_saved > 2 or limit == 0:
            _save_state(self.state_path, self.key, self.done_through)
            self.last_saved = time.monotonic()


class _Identities:
    """Who each face is: embeddings sampled along each track (`core.identity.TrackIdentities`),
    and with `--reference`, which faces are not that person (they are counted, not written)."""

    def __init__(self, job: _Job, detector: object, landmarker: object, new_id: Callable[[], int]):
        from facelab.detect.base import create_identity
        from facelab.detect.identity import reference_identities

        self.job, self.model = job, create_identity()
        job.writer.identity_key = self.model.key
        self.tracks = TrackIdentities(self.model.threshold, new_id, every=IDENTITY_EVERY[job.opts.side])
        self.refs = reference_identities(Path(job.opts.reference), self.model, detector, landmarker) if job.opts.reference else None
        self.names: list[str] = []
        self.missed: list[str] = []

    def assign(self, frame: _Frame) -> None:
        index = len(self.names)
        self.names.append(frame.path.name)
        faces = frame.faces
        if faces:
            embed = lambda idx: self.model.embed(frame.image, [faces[i].landmarks for i in idx])  # noqa: E731
            for face, (track, emb, source) in zip(faces, self.tracks.assign(index, [f.track for f in faces], embed)):
                face.track, face.identity, face.identity_from = track, emb, self.names[source]
        if self.refs is None:
            return
        far = nearest(np.stack([f.identity for f in faces]), self.refs) if faces else np.zeros(0)
        for face, d in zip(faces, far):
            face.other_person = bool(d >= self.job.opts.reference_threshold)
        self.job.counts.other_faces += sum(f.other_person for f in faces)
        if frame.image is not None and all(f.other_person for f in faces):
            self.job.counts.person_missed += 1
            self.missed.append(frame.path.name)


class _Tracker:
    """Links each frame's faces to the previous frame's by box overlap (`core.tracking`). A
    resumed run numbers its tracks after the ones already written."""

    def __init__(self, first_id: int = 0) -> None:
        self.prev: list[tuple[int, tuple]] = []
        self.next_id = first_id

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def assign(self, faces: list[_Face]) -> None:
        ids, self.next_id = link_tracks(self.prev, [f.det.rect for f in faces], self.next_id)
        for f, tid in zip(faces, ids):
            f.track = tid
        self.prev = [(f.track, f.det.rect) for f in faces]


def _detected_frames(job: _Job, reader: ThreadPoolExecutor, todo: list[Path], detector, landmarker,  # noqa: ANN001
                     unreadable: list[str]) -> Iterator[_Frame]:  # fmt: skip
    """Each frame of `todo` in order with its faces: decoded ahead, detected in batches."""
    frames_iter = _prefetch(reader, read_image, todo, PREFETCH)
    detecting, landmarking = Pieces("face detection"), Pieces("landmarks")  # smaller batches if one runs out of memory
    while chunk := list(islice(frames_iter, BATCH)):
        images = [image for _, image in chunk if image is not None]
        dets = detecting.run(detector.detect_batch, images, join_lists)
        marks = landmarking.run(lambda part: landmarker.landmarks_batch([i for i, _ in part], [d for _, d in part]),
                                list(zip(images, dets)), join_lists)  # fmt: skip
        found = iter(zip(dets, marks))
        for path, image in chunk:
            frame = _Frame(path, image)
            if image is None:
                unreadable.append(path.name)
                log.warning("%s cannot be read as an image: skipped", path.name)
            else:
                frame.faces = keep_faces(*next(found), job.face_type, job.opts.max_faces)
            yield frame


def _say_device(*plugins) -> None:  # noqa: ANN002
    """The device line: the torch plugins' device, else the embedded models' CPU."""
    devices = {getattr(p, "device", None) for p in plugins} - {None}
    if devices:
        from facelab.nn.device import describe

        for device in devices:
            log.info(describe(device))
    else:
        log.info("device: cpu (the embedded detector and landmarker run on the CPU)")


def _auto_pass(job: _Job, todo: list[Path], resume_after: str | None) -> list[str]:
    """The detector pipeline over `todo`; returns the names of unreadable frames.

    Frames go through a sliding window of 2 x radius + 1 so that each face can be smoothed with
    its track in the frames around it before it is written."""
    opts = job.opts
    detector = create_detector(opts.detector, weights=opts.detector_weights or None, device=opts.device)
    landmarker = create_landmarker(opts.landmarker, weights=opts.landmarker_weights or None, device=opts.device)
    _say_device(detector, landmarker)
    radius = SMOOTH_RADIUS if opts.smooth_landmarks else 0
    unreadable: list[str] = []
    window: list[_Frame] = []
    tracker = _Tracker(_next_track_id(job.aligned_dir) if resume_after else 0)
    identities = _Identities(job, detector, landmarker, tracker.new_id) if opts.identity or opts.reference else None
    bar = progress(total=len(todo), desc=f"faces from data_{opts.side}", unit="frame")
    with ThreadPoolExecutor(2, thread_name_prefix="read") as reader, ThreadPoolExecutor(2, thread_name_prefix="write") as pool:
        writes = _Writes(job, pool, resume_after, radius)
        try:
            for frame in _detected_frames(job, reader, todo, detector, landmarker, unreadable):
                job.counts.frames += 1
                if frame.image is not None:
                    job.counts.no_face += not frame.faces
                    tracker.assign(frame.faces)
                    if identities is not None:
                        identities.assign(frame)
                window.append(frame)
                if len(window) > radius:
                    writes.submit(window, len(window) - 1 - radius)
                if len(window) > 2 * radius + 1:
                    window.pop(0)
                bar.update(1)
            for centre in range(max(0, len(window) - radius), len(window)):
                writes.submit(window, centre)
            writes.settle(0)
            if identities is not None and identities.missed:
                shown = ", ".join(identities.missed[:5]) + (" ..." if len(identities.missed) > 5 else "")
                log.warning("the reference person was not found in %d frames: %s", len(identities.missed), shown)
        except BaseException:
            with contextlib.suppress(OSError):  # what was written is kept for the next run (disk full, Ctrl+C)
                _save_state(writes.state_path, writes.key, writes.done_through)
            raise
        finally:
            bar.close()
    return unreadable


def _next_track_id(aligned_dir: Path) -> int:
    """One more than the highest track id of the faces an earlier run wrote."""
    ids = [f.meta.track_id for f in load_faceset(aligned_dir, report=False) if f.meta is not None and f.meta.track_id is not None]
    return max(ids, default=-1) + 1


def _done(value: int) -> Future:
    fut: Future = Future()
    fut.set_result(value)
    return fut


def _load_state(path: Path) -> dict | None:
    try:
        if path.stat().st_size > 1 << 20:
            return None
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return state if isinstance(state, dict) else None


def _save_state(path: Path, key: dict, done_through: str | None) -> None:
    write_text_atomic(path, json.dumps({"version": 1, "settings": key, "done_through": done_through}, indent=1))
