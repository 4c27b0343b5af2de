"""Who is who: pure functions over identity embeddings (one row per face, float32 N x D).

Distances are Euclidean, as dlib's face-recognition model is trained for (two faces of one person
below its threshold, 0.6; of two people above it). Everything here is deterministic: the same
faces in the same order give the same clusters, chains and tracks.

- `distances(a, b)`: the N x M table.
- `clusters(emb, threshold)`: a label per face, 0 the largest group (centroid assignment, refined).
- `dissimilarity(emb, threshold)`: each face's distance to the centroid of the largest group
  (other people and failed detections score highest).
- `TrackIdentities`: one embedding per track of a video, sampled every few frames instead of on
  every face, and a track split where the person changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances, N x M, between the rows of `a` (N x D) and `b` (M x D)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(sq, 0)).astype(np.float32)


def clusters(emb: np.ndarray, threshold: float, rounds: int = 3) -> np.ndarray:
    """A label per face: faces within `threshold` of a group's centroid join it, in order; then
    `rounds` of reassigning each face to its nearest centroid. Labels are renumbered by size,
    0 the largest (ties: the group whose first face comes first)."""
    emb = np.asarray(emb, np.float32)
    if len(emb) == 0:
        return np.zeros(0, np.int64)
    sums, counts, labels = [emb[0].astype(np.float64)], [1], [0]
    for e in emb[1:]:
        cents = np.stack(sums) / np.array(counts)[:, None]
        d = distances(e[None], cents)[0]
        k = int(d.argmin())
        if d[k] < threshold:
            sums[k] = sums[k] + e
            counts[k] += 1
            labels.append(k)
        else:
            sums.append(e.astype(np.float64))
            counts.append(1)
            labels.append(len(sums) - 1)
    lab = np.array(labels)
    for _ in range(rounds):
        cents = np.stack([emb[lab == k].mean(0) for k in np.unique(lab)])
        new = np.unique(lab)[distances(emb, cents).argmin(1)]
        if (new == lab).all():
            break
        lab = new
    ids, first, sizes = np.unique(lab, return_index=True, return_counts=True)
    rank = {int(k): r for r, k in enumerate(ids[np.lexsort((first, -sizes))])}
    return np.array([rank[int(k)] for k in lab], np.int64)


def dissimilarity(emb: np.ndarray, threshold: float) -> np.ndarray:
    """Each face's distance to the centroid of the largest group (the set's majority person)."""
    emb = np.asarray(emb, np.float32)
    if len(emb) == 0:
        return np.zeros(0, np.float32)
    lab = clusters(emb, threshold)
    return distances(emb, emb[lab == 0].mean(0, keepdims=True))[:, 0]


def nearest(emb: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Each face's distance to the nearest of the reference embeddings."""
    emb, refs = np.asarray(emb, np.float32), np.asarray(refs, np.float32)
    if len(emb) == 0:
        return np.zeros(0, np.float32)
    return distances(emb, refs).min(1)


@dataclass
class TrackIdentities:
    """One embedding per track, computed for a track's first face and then every `every`-th
    frame of it (an embedding costs tens of milliseconds on a CPU; the detector a few).

    `assign(frame_index, tracks, embed)` takes the frame's track ids and a function that embeds
    the faces at the given positions; it returns, per face, (track id, embedding, index of the
    frame the embedding comes from). When a fresh embedding is over `threshold` from its track's,
    the person changed under an overlapping box: the face starts a new track (`new_id()`)."""

    threshold: float
    new_id: Callable[[], int]  # a fresh track id (the box tracker's counter: ids never collide)
    every: int = 8
    _last: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    _renamed: dict[int, int] = field(default_factory=dict)

    def assign(self, frame_index: int, tracks: Sequence[int],
               embed: Callable[[list[int]], list[np.ndarray]]) -> list[tuple[int, np.ndarray, int]]:  # fmt: skip
        current = [self._renamed.get(t, t) for t in tracks]
        due = [i for i, t in enumerate(current) if t not in self._last or frame_index - self._last[t][1] >= self.every]
        fresh = dict(zip(due, embed(due))) if due else {}
        out = []
        for i, (box_track, t) in enumerate(zip(tracks, current)):
            if i in fresh:
                e = np.asarray(fresh[i], np.float32)
                if t in self._last and float(np.linalg.norm(e - self._last[t][0])) >= self.threshold:
                    t = self.new_id()  # another person under the same box
                    self._renamed[box_track] = t
                self._last[t] = (e, frame_index)
            emb, source = self._last[t]
            out.append((t, emb, source))
        return out
