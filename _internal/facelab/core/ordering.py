"""Orderings of a faceset, as pure numpy (the sorting stage, `stages/sort.py`, measures the faces
and applies the order): distance matrices, DFL's greedy nearest-neighbour chain, and the pieces
of its "best" selection."""

from __future__ import annotations

from typing import Callable

import numpy as np


def bhattacharyya_matrix(hists: np.ndarray, channels: int = 1, rows: slice | None = None) -> np.ndarray:
    """Sum over channels of the Bhattacharyya distance between histograms (OpenCV's formula on
    normalised histograms), for `rows` against all; float32 (rows x N)."""
    n, bins = hists.shape[0], hists.shape[1] // channels
    h = hists.reshape(n, channels, bins).astype(np.float64)
    h = np.sqrt(h / np.maximum(h.sum(-1, keepdims=True), 1e-12)).astype(np.float32)
    rows = rows or slice(0, n)
    total = np.zeros((len(range(n)[rows]), n), np.float32)
    for c in range(channels):
        bc = h[rows, c] @ h[:, c].T
        total += np.sqrt(np.clip(1 - bc, 0, None))
    return total


def squared_distance_matrix(x: np.ndarray, rows: slice | None = None) -> np.ndarray:
    """|xi - xj|^2 for `rows` against all, through one matrix product."""
    rows = rows or slice(0, len(x))
    sq = (x * x).sum(1)
    return np.clip(sq[rows, None] + sq[None, :] - 2 * (x[rows] @ x.T), 0, None)


def greedy_chain(dist: np.ndarray) -> list[int]:
    """Start at 0, always step to the nearest face not yet visited (DFL's hist/absdiff order)."""
    n = len(dist)
    visited = np.zeros(n, bool)
    order = [0]
    visited[0] = True
    cur = 0
    for _ in range(n - 1):
        row = np.where(visited, np.inf, dist[cur])
        cur = int(row.argmin())
        visited[cur] = True
        order.append(cur)
    return order


def chain_in_chunks(features: np.ndarray, distance: Callable[[np.ndarray, slice], np.ndarray], chunk_size: int) -> list[int]:
    """Greedy chains over chunks of `chunk_size` faces, each distance matrix built in blocks of rows."""
    order: list[int] = []
    for start in range(0, len(features), chunk_size):
        chunk = features[start : start + chunk_size]
        d = np.empty((len(chunk), len(chunk)), np.float32)
        for r in range(0, len(chunk), 2048):
            d[r : r + 2048] = distance(chunk, slice(r, r + 2048))
        order += [start + i for i in greedy_chain(d)]
    return order


def pick_over_pitch(members: list[int], pitches: list[float], edges: np.ndarray, count: int,
                     hist_of: dict) -> tuple[list[int], list[int]]:  # fmt: skip
    """Up to `count` faces of one yaw bin, round-robin over its pitch bins, each pitch bin
    most-dissimilar histogram first; returns (picked, the rest)."""
    pitch_bins: list[list[int]] = [[] for _ in range(count)]
    for i, pitch in zip(members, pitches):
        pg = int(np.clip(np.searchsorted(edges, pitch, side="right") - 1, 0, count - 1))
        pitch_bins[pg].append(i)
    for pg, bin_members in enumerate(pitch_bins):
        valid = [i for i in bin_members if hist_of.get(i) is not None]
        if len(valid) > 1:
            score = bhattacharyya_matrix(np.stack([hist_of[i] for i in valid])).sum(1)
            valid = [valid[k] for k in np.argsort(-score, kind="stable")]
        pitch_bins[pg] = valid + [i for i in bin_members if hist_of.get(i) is None]
    picked: list[int] = []
    while len(picked) < count and any(pitch_bins):
        for pb in pitch_bins:
            if pb and len(picked) < count:
                picked.append(pb.pop(0))
    return picked, [i for pb in pitch_bins for i in pb]


def take_round_robin(chosen: list[list[int]], target: int) -> tuple[list[int], list[int]]:
    """DFL's quotas only approximate the target; take exactly `target`, round-robin over yaw bins
    so every head turn keeps its share, and list the kept faces in yaw order. (keep, trash)."""
    rank = {}
    for r in range(max((len(c) for c in chosen), default=0)):
        for c in chosen:
            if r < len(c) and len(rank) < target:
                rank[c[r]] = True
    return [i for c in chosen for i in c if i in rank], [i for c in chosen for i in c if i not in rank]
