"""Shared fixtures: real media, workspaces in tmp_path, running entry scripts as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

# Every window is Qt; tests drive them offscreen with real events.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from media import REPO, media_file  # noqa: E402

from facelab.workspace import Workspace  # noqa: E402


@pytest.fixture(scope="session")
def media() -> Callable[[str], Path]:
    """`media("carphone.mp4")` -> path of a real face file from a registry package."""
    return media_file


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace with the standard layout."""
    workspace = Workspace.at(tmp_path / "workspace")
    workspace.create_layout()
    return workspace


def run_script(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `scripts/<name>.sh` as a headless user would: no terminal on stdin."""
    env = dict(os.environ)
    env.pop("FACELAB_WORKSPACE", None)
    return subprocess.run(
        [str(REPO / "scripts" / f"{name}.sh"), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


@pytest.fixture
def script() -> Callable[..., subprocess.CompletedProcess]:
    return run_script
