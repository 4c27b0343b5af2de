"""Face tracks across video frames and zero-lag landmark smoothing for extraction.

Faces are linked frame to frame by the overlap of their boxes. Smoothing is offline and
symmetric: a face's *alignment* (the similarity transform to DFL's mean face: centre, scale,
angle) is averaged with the same track's alignment in up to `radius` frames before and after,
using as many frames on each side. A symmetric average has no delay, so a face moving at
constant speed is followed exactly (a causal filter such as an EMA would trail behind it); only
the frame-to-frame jitter is removed. The landmark *shape* (mouth, eyes) of each frame is kept:
the points are only moved by the correction transform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from facelab.core.landmarks import transform_points, umeyama_to_mean_face


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def link_tracks(prev: list[tuple[int, tuple]], boxes: list[tuple], next_id: int, min_iou: float = 0.3):
    """Give each box of this frame a track id: the best-overlapping box of the previous frame's
    (track id, box) list, greedily by overlap, else a new id. Returns (ids, next free id)."""
    pairs = sorted(
        ((box_iou(pb, b), pi, bi) for pi, (_, pb) in enumerate(prev) for bi, b in enumerate(boxes)),
        reverse=True,
    )
    ids: list[int | None] = [None] * len(boxes)
    used = set()
    for iou, pi, bi in pairs:
        if iou < min_iou:
            break
        if pi in used or ids[bi] is not None:
            continue
        ids[bi] = prev[pi][0]
        used.add(pi)
    for i in range(len(ids)):
        if ids[i] is None:
            ids[i] = next_id
            next_id += 1
    return ids, next_id


@dataclass(frozen=True)
class Pose2D:
    """A similarity transform to the mean face as centre (frame px), log-scale and angle."""

    centre: np.ndarray
    log_scale: float
    angle: float

    @classmethod
    def of(cls, landmarks: np.ndarray) -> Pose2D:
        m = umeyama_to_mean_face(landmarks)  # frame -> unit mean face
        centre = transform_points(np.array([[0.5, 0.5]]), m, invert=True)[0]
        return cls(centre, math.log(math.hypot(m[0, 0], m[1, 0])), math.atan2(m[1, 0], m[0, 0]))

    def matrix(self) -> np.ndarray:
        s = math.exp(self.log_scale)
        c, n = s * math.cos(self.angle), s * math.sin(self.angle)
        lin = np.array([[c, -n], [n, c]])
        return np.hstack([lin, (np.array([0.5, 0.5]) - lin @ self.centre)[:, None]])


def mean_pose(poses: list[Pose2D]) -> Pose2D:
    ref = poses[len(poses) // 2].angle
    angles = [ref + math.remainder(p.angle - ref, 2 * math.pi) for p in poses]
    return Pose2D(
        np.mean([p.centre for p in poses], axis=0), float(np.mean([p.log_scale for p in poses])), float(np.mean(angles))
    )


def smooth_track(landmarks: list[np.ndarray], radius: int = 2) -> list[np.ndarray]:
    """Zero-lag smoothing of one track's consecutive landmark sets (see the module docstring)."""
    poses = [Pose2D.of(lm) for lm in landmarks]
    out = []
    for t, lm in enumerate(landmarks):
        k = min(radius, t, len(landmarks) - 1 - t)
        if k == 0:
            out.append(np.asarray(lm, np.float32))
            continue
        target = mean_pose(poses[t - k : t + k + 1]).matrix()
        # move this frame's points from its own alignment to the smoothed one
        aligned = transform_points(lm, poses[t].matrix())
        out.append(transform_points(aligned, target, invert=True).astype(np.float32))
    return out
