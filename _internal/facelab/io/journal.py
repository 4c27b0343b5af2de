"""Crash-safe renames of many faces at once (sort, recover-filenames).

A stage that renames a whole faceset writes its plan first, `<folder>/.facelab-renames.json`
(atomically, before the first rename), then moves every face to a staging name in
`<folder>/.renaming/` (invisible to the stages), then each staged face to its final name (or to
the trash), then deletes the plan. Killed at any moment, the next stage that loads the folder
finishes the plan before anything else (`finish_renames`, called by `load_faceset`): no face
can be renamed onto one not yet moved, and none is lost.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from facelab.errors import UserError
from facelab.io.frames import fsync_dir, write_text_atomic
from facelab.io.names import plain_file_name

log = logging.getLogger(__name__)

PLAN = ".facelab-renames.json"
STAGING = ".renaming"


def rename_all(folder: Path, moves: list[tuple[Path, Path]], what: str) -> None:
    """Move each `source` to `target` (in `folder`, or in its trash folder) as one crash-safe step.

    Every source must be a file of `folder`; targets must be distinct and not the name of a file
    that stays where it is."""
    folder = Path(folder)
    plan = {"what": what, "phase": 1, "moves": [[s.name, os.path.relpath(t, folder)] for s, t in moves]}
    write_text_atomic(folder / PLAN, json.dumps(plan))
    _roll_forward(folder, plan)


def finish_renames(folder: Path) -> None:
    """Finish a plan an earlier run left (killed halfway); nothing to do without one."""
    folder = Path(folder)
    path = folder / PLAN
    if not path.exists():
        return
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        moves = [(str(s), str(t)) for s, t in plan["moves"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"{path} (an interrupted rename of this faceset) cannot be read: the faces are in {folder} and "
                        f"{folder / STAGING}; move those back by hand, then delete the file") from None  # fmt: skip
    for source, target in moves:  # a plan is ours, but one on disk is still untrusted input
        plain_file_name(source, str(path))
        _check_target(target, folder, str(path))
    log.warning("finishing an interrupted %s of %d faces in %s", plan.get("what", "rename"), len(moves), folder)
    _roll_forward(folder, {"what": plan.get("what"), "moves": moves, "phase": plan.get("phase", 1)})


def _check_target(target: str, folder: Path, where: str) -> None:
    """A target is a plain name in the folder, or `../<folder>_trash/<plain name>`."""
    parts = Path(target).parts
    if len(parts) == 3 and parts[0] == ".." and parts[1] == f"{folder.name}_trash":
        plain_file_name(parts[2], where)
    elif len(parts) == 1:
        plain_file_name(target, where)
    else:
        raise UserError(f"{where}: the rename target {target!r} is outside the faceset: delete the file if no sort is running")


def _roll_forward(folder: Path, plan: dict) -> None:
    staging = folder / STAGING
    staging.mkdir(exist_ok=True)
    moves = plan["moves"]
    if plan.get("phase", 1) == 1:  # phase 1: every face to its staging name (no final name exists yet)
        for k, (source, _) in enumerate(moves):
            src, staged = folder / source, staging / f"{k:06d}"
            if src.exists() and not staged.exists():
                os.replace(src, staged)
        fsync_dir(staging)
        write_text_atomic(folder / PLAN, json.dumps({**plan, "phase": 2}))  # from here a source name may be a new face
    for k, (_, target) in enumerate(moves):  # phase 2: each staged face to its final place
        staged, final = staging / f"{k:06d}", folder / target
        if staged.exists():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)
    fsync_dir(folder)
    (folder / PLAN).unlink()
    try:
        staging.rmdir()
    except OSError:
        log.warning("%s is not empty after a rename: its files are faces, nothing was deleted", staging)
