"""Which runtime FaceLab runs in: the portable bundle, a developer's venv, or some other Python.

Standard library only: `__main__` asks it before anything heavy is imported, so a broken
bundle (its `site-packages` deleted, say) can be named in one line instead of a traceback.

The bundle's layout (README "Download and run", `packaging/build_portable.py`):

    FaceLab/_internal/python/         the base interpreter and its `._pth` (isolated)
    FaceLab/_internal/site-packages/  every dependency
    FaceLab/_internal/facelab/        this package
"""

from __future__ import annotations

import sys
from pathlib import Path

INTERNAL = Path(__file__).resolve().parents[1]  # FaceLab/_internal
BUNDLE_PYTHON = INTERNAL / "python"
BUNDLE_PACKAGES = INTERNAL / "site-packages"
VENV = INTERNAL / "venv"
BUILD_INFO = INTERNAL / "build-info.json"


def _inside(path: str | Path, folder: Path) -> bool:
    try:
        Path(path).resolve().relative_to(folder.resolve())
    except (OSError, ValueError):
        return False
    return True


def inside_folder(path: str | Path) -> bool:
    """Whether `path` lies inside this FaceLab folder (the one holding `_internal`)."""
    return _inside(path, INTERNAL.parent)


def kind() -> str:
    """'bundle', 'venv' or 'other' (a Python that FaceLab's scripts did not set up)."""
    if _inside(sys.executable, BUNDLE_PYTHON):
        return "bundle"
    if _inside(sys.prefix, VENV):
        return "venv"
    return "other"


def repair_hint() -> str:
    """What to do when the runtime is incomplete, for the runtime we are in."""
    if kind() == "bundle":
        return "the FaceLab folder is incomplete: unpack the FaceLab download again into an empty folder"
    return "run setup again (./setup.sh or setup.bat) with a connection to the package registry"


def describe() -> str:
    """One line for `facelab doctor`: which runtime, where."""
    which = kind()
    if which == "bundle":
        return f"portable bundle ({INTERNAL.parent})"
    if which == "venv":
        return f"developer venv ({VENV})"
    return f"other Python ({sys.prefix}); the numbered scripts use _internal/python or _internal/venv"
