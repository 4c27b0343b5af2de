"""Scripts 4.2 / 5.2 faceset utilities (dfl-spec §11 "Faceset utilities").

Built so far: `dump`, one JSON object per line per face (file name and every metadata field,
arrays as lists), for users and scripts. The other utilities (metadata save/restore, pack,
resize, info, ...) come with the faceset-tools issue.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facelab.errors import UserError
from facelab.io.faceimage import FaceMetaError, read_meta
from facelab.io.frames import list_images
from facelab.options import option
from facelab.report import Report
from facelab.workspace import Workspace

ACTIONS = ("dump", "add-landmarks-debug", "recover-filenames", "metadata-save", "metadata-restore", "pack",
           "unpack", "resize", "info", "export-masks")  # fmt: skip


@dataclass(frozen=True)
class FacesetOptions:
    action: str = option("Action", "dump", choices=ACTIONS, ask=False, positional=True, help="what to do")
    input_dir: str = option("Input folder", "", ask=False, positional=True,
                            help="aligned folder; default workspace/data_<side>/aligned")  # fmt: skip
    side: str = option("Side", "src", choices=("src", "dst"), ask=False, help="which faceset when no folder is given")


def _folder(ws: Workspace, opts: FacesetOptions) -> Path:
    if opts.input_dir:
        folder = Path(opts.input_dir).expanduser().resolve()
    else:
        ws.require()
        folder = ws.aligned_dir(opts.side)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: give an aligned faces folder")
    return folder


def run(ws: Workspace, opts: FacesetOptions) -> Iterator[str]:
    """A generator: yields output lines, returns the Report."""
    started = time.perf_counter()
    if opts.action != "dump":
        raise UserError(f"faceset {opts.action} is not built yet in this version")
    folder = _folder(ws, opts)
    faces = skipped = 0
    for path in list_images(folder):
        try:
            meta = read_meta(path)
        except FaceMetaError as exc:
            yield json.dumps({"file": path.name, "error": str(exc)})
            skipped += 1
            continue
        if meta is None:
            yield json.dumps({"file": path.name, "error": "no face metadata"})
            skipped += 1
            continue
        yield json.dumps({"file": path.name, **meta.to_dict()}, separators=(",", ":"))
        faces += 1
    return Report("faceset dump", f"{faces} faces in {folder}" + (f", {skipped} without readable metadata" if skipped else ""),
                  time.perf_counter() - started, {"faces": faces, "skipped": skipped})  # fmt: skip
