"""Where DFL's and faceswap's golden numbers are (../shared/reference/dfl-golden, faceswap-golden);
tests skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from media import REPO

GOLDEN = REPO.parent / "shared" / "reference" / "dfl-golden"
FACESWAP_GOLDEN = REPO.parent / "shared" / "reference" / "faceswap-golden"


def golden(name: str) -> Path:
    path = GOLDEN / name
    if not path.exists():
        pytest.skip(f"DFL golden data {path} is not here")
    return path


def faceswap_golden(name: str = "") -> Path:
    """A path in faceswap's own extraction output (skip when absent)."""
    path = FACESWAP_GOLDEN / name
    if not path.exists():
        pytest.skip(f"faceswap golden data {path} is not here")
    return path
