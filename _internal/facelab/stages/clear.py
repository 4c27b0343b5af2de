"""Script 1: clear the workspace and recreate its layout (dfl-spec §1.1 "clear workspace")."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from facelab.errors import ConfirmationNeeded
from facelab.options import option
from facelab.report import Report
from facelab.workspace import PLACEHOLDER, Workspace


@dataclass(frozen=True)
class ClearOptions:
    yes: bool = option("Delete without asking", False, ask=False,
                       help="delete everything in the workspace without asking (headless use)")  # fmt: skip


def clear_workspace(ws: Workspace, opts: ClearOptions) -> Report:
    """Delete everything in the workspace (videos, frames, faces, models), then recreate the layout."""
    started = time.perf_counter()
    files = [p for p in ws.root.rglob("*") if p.is_file() and p.name != PLACEHOLDER] if ws.root.is_dir() else []
    if files and not opts.yes:
        raise ConfirmationNeeded(
            f"{ws.root} holds {len(files)} files (videos, frames, faces, models) that will all be deleted",
            "yes",
        )
    if ws.root.is_dir():
        for child in ws.root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    ws.create_layout()
    return Report(
        stage="clear-workspace",
        summary=f"{ws.root} is empty and ready" + (f" ({len(files)} files deleted)" if files else ""),
        seconds=time.perf_counter() - started,
        counts={"deleted": len(files)},
    )
