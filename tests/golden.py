"""Where DFL's golden numbers are (../shared/reference/dfl-golden); tests skip when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from media import REPO

GOLDEN = REPO.parent / "shared" / "reference" / "dfl-golden"


def golden(name: str) -> Path:
    path = GOLDEN / name
    if not path.exists():
        pytest.skip(f"DFL golden data {path} is not here")
    return path
