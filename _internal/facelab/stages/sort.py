"""Scripts 4.2 / 5.2 sort: order an aligned faceset by a measure, as dfl-spec §6, vectorised.

Every DFL method is here under names that work (DFL's `final-by-*` names crashed; "final" is
`best`, "final-fast" is `best-fast`). Results as DFL: rejected faces move to `<aligned>_trash`,
kept faces are renamed `00000.jpg`, `00001.jpg`, ... in the new order; metadata is untouched
(`faceset recover-filenames` restores the original names).

Differences, on purpose:
- the sharpness measure is `core.quality.estimate_sharpness` (contrast-normalised gradient
  energy), not CPBD with per-pixel Python loops;
- `hist` and `absdiff` build their distance matrices with matrix products in blocks (hist:
  Bhattacharyya through sqrt-histogram dot products; absdiff: squared differences of 32 px
  thumbnails), and chain within chunks of 20 000 faces as DFL did; no N x N file on disk;
- the trash folder is not emptied first (files there are kept; name clashes get a suffix).
"""

from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from facelab.core.identity import dissimilarity
from facelab.core.landmarks import estimate_pitch_yaw_roll
from facelab.core.masks import hull_mask
from facelab.core.ordering import (
    bhattacharyya_matrix, chain_in_chunks, pick_over_pitch, squared_distance_matrix, take_round_robin,
)  # fmt: skip
from facelab.core.quality import estimate_motion_blur, estimate_sharpness
from facelab.errors import UserError
from facelab.io.faceset import PACK_NAME, Face, load_faceset, trash_folder, unique_path
from facelab.io.frames import decode_image, list_images
from facelab.io.journal import rename_all
from facelab.log import progress
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

log = logging.getLogger(__name__)

CHAIN_CHUNK = 20_000

METHODS = {
    "blur": "sharpest first (faces without metadata go to trash)",
    "motion-blur": "least motion blur first (Laplacian variance)",
    "face-yaw": "by head turn, left to right",
    "face-pitch": "by head tilt, up to down",
    "face-source-rect-size": "largest face in its frame first",
    "hist": "similar colour histograms next to each other (DFL's default)",
    "hist-dissim": "most unusual histogram first",
    "brightness": "brightest first",
    "hue": "by hue",
    "black": "fewest black pixels first",
    "origname": "by the frame each face came from",
    "oneface": "trash every face of frames that have more than one face",
    "absdiff": "similar-looking faces next to each other (or the most dissimilar first)",
    "face": "the same person's faces next to each other (by identity, as faceswap's 'face')",
    "face-dissim": "faces least like the faceset's main person first: other people and failed detections",
    "best": "keep a target number of the sharpest faces spread over yaw and pitch; the rest to trash",
    "best-fast": "as best, with face size instead of sharpness (faster)",
}


@dataclass(frozen=True)
class SortOptions:
    side: str = option("Side", "src", choices=("src", "dst"), ask=False, help="which faceset: data_src or data_dst")
    by: str = option("Sort by", "hist", choices=tuple(METHODS),
                     help="; ".join(f"{k}: {v}" for k, v in METHODS.items()))  # fmt: skip
    target_count: int = option("Target number of faces", 2000, min=1, max=1_000_000,
                               ask=lambda v: v["by"] in ("best", "best-fast"), help="how many faces best keeps")  # fmt: skip
    dissimilar: bool = option("Sort by dissimilar", False, ask=lambda v: v["by"] == "absdiff",
                              help="absdiff: most dissimilar faces first instead of a similarity chain")  # fmt: skip
    input_dir: str = option("Input folder", "", ask=False, help="aligned folder; default workspace/data_<side>/aligned")


@dataclass(frozen=True)
class Ordering:
    keep: list[int]  # indices into the faceset, in the new order
    trash: list[int]


# ---------------------------------------------------------------- measurements


def _decode(face: Face, reduce: int = 1) -> np.ndarray | None:
    flag = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}[reduce]
    return decode_image(face.read_bytes(), flag)


def _each(faces: Sequence[Face], fn: Callable[[Face], object], desc: str) -> list:
    """fn over all faces in a thread pool (OpenCV releases the GIL), with a progress bar."""
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(progress(pool.map(fn, faces), total=len(faces), desc=desc, unit="face"))


def _hull(face: Face, img: np.ndarray) -> np.ndarray | None:
    """The face's landmark hull at the decoded image's size (decoding may be reduced)."""
    if face.meta is None or face.shape is None:
        return None
    h, w = img.shape[:2]
    return hull_mask((h, w), face.meta.landmarks * (w / face.shape[1]), face.meta.eyebrows_expand_mod)


def _sharpness(face: Face) -> float:
    img = _decode(face)
    if img is None or face.meta is None:
        return -1.0
    return estimate_sharpness(img, _hull(face, img))


def _motion(face: Face) -> float:
    img = _decode(face)
    if img is None or face.meta is None:
        return -1.0
    return estimate_motion_blur(img, _hull(face, img))


def _pose(face: Face) -> tuple[float, float] | None:
    """(pitch, yaw) in radians from the aligned landmarks (DFL's convention)."""
    if face.meta is None or face.shape is None:
        return None
    pitch, yaw, _ = estimate_pitch_yaw_roll(face.meta.landmarks, size=face.shape[1])
    return pitch, yaw


def _hist_bgr(face: Face) -> np.ndarray | None:
    img = _decode(face, 4)
    if img is None:
        return None
    return np.concatenate([cv2.calcHist([img], [c], None, [256], [0, 256]).ravel() for c in range(3)])


def _hist_gray_masked(face: Face) -> np.ndarray | None:
    img = _decode(face, 4)
    if img is None:
        return None
    mask = _hull(face, img)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    m = None if mask is None else (mask[..., 0] > 0).astype(np.uint8)
    return cv2.calcHist([gray], [0], m, [256], [0, 256]).ravel()


def _thumb(face: Face) -> np.ndarray | None:
    img = _decode(face, 4)
    return None if img is None else cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32).ravel() / 255


def _hsv_mean(channel: int) -> Callable[[Face], float]:
    def fn(face: Face) -> float:
        img = _decode(face, 4)
        return -1.0 if img is None else float(cv2.cvtColor(img, cv2.COLOR_BGR2HSV)[..., channel].mean())

    return fn


def _black(face: Face) -> float:
    img = _decode(face, 4)
    return float("inf") if img is None else float((img == 0).sum()) * 16


def _stack(values: list, faces: Sequence[Face]) -> tuple[np.ndarray, list[int], list[int]]:
    ok = [i for i, v in enumerate(values) if v is not None]
    bad = [i for i, v in enumerate(values) if v is None]
    return (np.stack([values[i] for i in ok]) if ok else np.zeros((0, 1), np.float32)), ok, bad


# ---------------------------------------------------------------- methods


def _by_key(faces: Sequence[Face], fn: Callable[[Face], object], desc: str, reverse: bool, invalid=None) -> Ordering:  # noqa: ANN001
    values = _each(faces, fn, desc)
    good = [i for i, v in enumerate(values) if v is not None and v != invalid]
    kept = set(good)
    bad = [i for i in range(len(faces)) if i not in kept]
    return Ordering(sorted(good, key=lambda i: values[i], reverse=reverse), bad)


def sort_faces(faces: Sequence[Face], opts: SortOptions) -> Ordering:
    """The new order of `faces` (and which go to the trash) for `opts.by`."""
    by = opts.by
    if by == "blur":
        return _by_key(faces, _sharpness, "sharpness", True, invalid=-1.0)
    if by == "motion-blur":
        return _by_key(faces, _motion, "motion blur", True, invalid=-1.0)
    if by in ("face-yaw", "face-pitch"):
        k = 1 if by == "face-yaw" else 0
        return _by_key(faces, lambda f: None if (p := _pose(f)) is None else p[k], "pose", True)
    if by == "face-source-rect-size":
        def area(f: Face) -> float | None:
            r = None if f.meta is None else f.meta.source_rect
            return None if r is None else float((r[2] - r[0]) * (r[3] - r[1]))

        return _by_key(faces, area, "rect size", True)
    if by == "brightness":
        return _by_key(faces, _hsv_mean(2), "brightness", True, invalid=-1.0)
    if by == "hue":
        return _by_key(faces, _hsv_mean(0), "hue", True, invalid=-1.0)
    if by == "black":
        return _by_key(faces, _black, "black pixels", False, invalid=float("inf"))
    if by == "origname":
        return _by_key(faces, lambda f: None if f.meta is None else f.meta.source_filename, "names", False)
    if by == "oneface":
        return _oneface(faces)
    if by == "hist":
        hists, ok, bad = _stack(_each(faces, _hist_bgr, "histograms"), faces)
        order = chain_in_chunks(hists, lambda x, rows: bhattacharyya_matrix(x, 3, rows), CHAIN_CHUNK) if ok else []
        return Ordering([ok[i] for i in order], bad)
    if by == "hist-dissim":
        hists, ok, bad = _stack(_each(faces, _hist_gray_masked, "histograms"), faces)
        score = np.zeros(len(ok), np.float64)
        for r in range(0, len(ok), 2048):
            score[r : r + 2048] = bhattacharyya_matrix(hists, 1, slice(r, r + 2048)).sum(1)
        return Ordering([ok[i] for i in np.argsort(-score, kind="stable")], bad)
    if by == "absdiff":
        thumbs, ok, bad = _stack(_each(faces, _thumb, "thumbnails"), faces)
        if opts.dissimilar:
            score = np.zeros(len(ok), np.float64)
            for r in range(0, len(ok), 2048):
                score[r : r + 2048] = np.sqrt(squared_distance_matrix(thumbs, slice(r, r + 2048))).sum(1)
            return Ordering([ok[i] for i in np.argsort(-score, kind="stable")], bad)
        order = chain_in_chunks(thumbs, squared_distance_matrix, CHAIN_CHUNK) if ok else []
        return Ordering([ok[i] for i in order], bad)
    if by in ("best", "best-fast"):
        return _best(faces, opts.target_count, fast=by == "best-fast")
    if by in ("face", "face-dissim"):
        return _by_identity(faces, dissimilar=by == "face-dissim")
    raise UserError(f"unknown sort method {by!r}; use one of {', '.join(METHODS)}")


def _by_identity(faces: Sequence[Face], dissimilar: bool) -> Ordering:
    """By the stored identities: a nearest-neighbour chain, or the distance to the main person.
    Faces without an identity of the current model come last (nothing goes to the trash)."""
    from facelab.detect.identity import default_model, faceset_identities

    folder = faces[0].path.parent if faces and faces[0].path is not None else Path("the faceset")
    emb, have, missing = faceset_identities(faces, folder)
    if dissimilar:
        order = list(np.argsort(-dissimilarity(emb, default_model().threshold), kind="stable"))
    else:
        order = chain_in_chunks(emb, squared_distance_matrix, CHAIN_CHUNK)
    return Ordering([have[i] for i in order] + missing, [])


def _oneface(faces: Sequence[Face]) -> Ordering:
    """Trash every face of frames that gave more than one face (by source frame, else by name)."""
    def frame_of(f: Face) -> str:
        if f.meta is not None and f.meta.source_filename:
            return f.meta.source_filename
        return Path(f.name).stem.rsplit("_", 1)[0]

    counts: dict[str, int] = {}
    for f in faces:
        counts[frame_of(f)] = counts.get(frame_of(f), 0) + 1
    keep = [i for i, f in enumerate(faces) if counts[frame_of(f)] == 1]
    return Ordering(keep, [i for i, f in enumerate(faces) if counts[frame_of(f)] > 1])


def _best(faces: Sequence[Face], target: int, fast: bool) -> Ordering:
    """DFL's "final" sort: spread `target` faces over 128 yaw bins, the sharpest of each bin
    spread over pitch bins, each pitch bin ordered by histogram dissimilarity; exactly `target`
    faces are kept when there are that many (DFL's quotas could keep many more or none)."""
    poses = _each(faces, _pose, "pose")
    if fast:
        sharp = [(-1.0 if f.meta is None or f.meta.source_rect is None else
                  float(np.prod(f.meta.source_rect[2:] - f.meta.source_rect[:2]))) for f in faces]  # fmt: skip
    else:
        sharp = _each(faces, _sharpness, "sharpness")
    trash = [i for i, p in enumerate(poses) if p is None]
    usable = [i for i, p in enumerate(poses) if p is not None]
    grads = 128
    per_grad = max(1, round(target / grads))
    edges = np.linspace(-1.2, 1.2, grads + 1)
    yaw_bins: list[list[int]] = [[] for _ in range(grads)]
    for i in usable:
        yaw = -poses[i][1]
        g = int(np.clip(np.searchsorted(edges, yaw, side="right") - 1, 0, grads - 1))
        yaw_bins[g].append(i)
    lack = sum(max(per_grad - len(b), 0) for b in yaw_bins)
    per_grad += lack // grads
    for g, members in enumerate(yaw_bins):
        members.sort(key=lambda i: sharp[i], reverse=True)
        trash += members[per_grad * 10 :]
        yaw_bins[g] = members[: per_grad * 10]

    pitch_edges = np.linspace(-math.pi / 2, math.pi / 2, per_grad + 1)
    wanted = [i for b in yaw_bins for i in b]
    hist_of = dict(zip(wanted, _each([faces[i] for i in wanted], _hist_gray_masked, "histograms")))
    chosen: list[list[int]] = []  # per yaw bin, in the order DFL picks them
    for members in yaw_bins:
        if members:
            picked, left = pick_over_pitch(members, [poses[i][0] for i in members], pitch_edges, per_grad, hist_of)
            chosen.append(picked)
            trash += left
    keep, extra = take_round_robin(chosen, target)
    trash += extra
    return Ordering(keep, trash)


# ---------------------------------------------------------------- applying


def apply_ordering(folder: Path, faces: Sequence[Face], ordering: Ordering) -> Path:
    """Move trashed faces to `<folder>_trash`, rename kept ones 00000.jpg ... in order, as one
    crash-safe step (io.journal: a killed sort is finished by the next stage that loads the folder)."""
    trash = trash_folder(folder)
    moves, taken = [], set()
    for i in ordering.trash:
        path = faces[i].path
        assert path is not None
        target = unique_path(trash, path.name)
        while target.name in taken:  # two trashed faces of the same name
            target = unique_path(trash, f"{target.stem}_{len(taken)}{target.suffix}")
        taken.add(target.name)
        moves.append((path, target))
    for n, i in enumerate(ordering.keep):
        path = faces[i].path
        assert path is not None
        moves.append((path, folder / f"{n:05d}{path.suffix.lower()}"))
    rename_all(folder, moves, "sort")
    return trash


def sort_faceset(ws: Workspace, opts: SortOptions) -> Report:
    started = time.perf_counter()
    folder = ws.faceset_folder(opts.side, opts.input_dir)
    if not list_images(folder) and (folder / PACK_NAME).exists():
        raise UserError(f"{folder} is packed: run the faceset unpack script first, then sort")
    faces = load_faceset(folder)
    if not faces:
        raise UserError(f"{folder} has no faces: extract faces first (scripts 4 / 5)")
    ordering = sort_faces(faces, opts)
    trash_dir = apply_ordering(folder, faces, ordering)
    summary = f"{len(ordering.keep)} faces of {folder} sorted by {opts.by}"
    if ordering.trash:
        summary += f"; {len(ordering.trash)} moved to {trash_dir}"
    return Report("sort", summary, time.perf_counter() - started, {"kept": len(ordering.keep), "trashed": len(ordering.trash)})
