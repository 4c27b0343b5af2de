"""Crash-safe model checkpoints: safetensors weights + optimiser state + JSON state, in generations.

Layout of a model folder (`workspace/model/<name>_<Model>/`):
```
checkpoints/00000050/weights.safetensors     model tensors
checkpoints/00000050/optimizer.safetensors   optimiser slots (m, v, ...)
checkpoints/00000050/state.json              options, iteration, loss history, RNG states, schema
checkpoints/00000050/manifest.json           sha256 and size of the three files above
autobackups/<YYYYmmdd_HHMMSS>_<iter>/        full copies of a generation (rotating)
```
A generation is written into a temporary folder (each file fsynced), its manifest last, then the
folder is renamed into place and the parent folder fsynced: a crash at any moment leaves either
the complete new generation or none of it. The newest `KEEP` generations are kept.

Loading walks generations from the newest, verifies each against its manifest and takes the first
good one, saying which it skipped and why. If none is good, it raises: a failed load never lets a
fresh model start over an old one. (DFL deleted the old file before renaming the new one and never
fsynced: DFL#5357, DFL#5570.)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facelab.errors import UserError
from facelab.io.frames import fsync_dir

if TYPE_CHECKING:  # torch is imported where tensors are read or written, not to list models
    import torch

log = logging.getLogger(__name__)

SCHEMA = "facelab.checkpoint"
SCHEMA_VERSION = 1
KEEP = 3
FILES = ("weights.safetensors", "optimizer.safetensors", "state.json")


@dataclass
class Checkpoint:
    folder: Path
    iteration: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    state: dict[str, Any]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def generations(model_dir: Path) -> list[Path]:
    """Complete-looking generation folders, newest first."""
    root = Path(model_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name), reverse=True)


def save(
    model_dir: Path,
    iteration: int,
    weights: dict[str, torch.Tensor],
    optimizer: dict[str, torch.Tensor],
    state: dict[str, Any],
    keep: int = KEEP,
) -> Path:
    """Write generation `iteration` atomically and prune to the newest `keep`."""
    from safetensors.torch import save_file

    root = Path(model_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{iteration:08d}"
    tmp = root / f".tmp_{iteration:08d}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / FILES[0]))
    save_file({k: v.detach().contiguous().cpu() for k, v in optimizer.items()}, str(tmp / FILES[1]))
    full_state = {"schema": SCHEMA, "version": SCHEMA_VERSION, "iteration": iteration, **state}
    (tmp / FILES[2]).write_text(json.dumps(full_state), encoding="utf-8")
    manifest = {}
    for name in FILES:
        _fsync_file(tmp / name)
        manifest[name] = {"sha256": _sha256(tmp / name), "size": (tmp / name).stat().st_size}
    (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    _fsync_file(tmp / "manifest.json")
    fsync_dir(tmp)
    if final.exists():  # the same iteration saved twice (e.g. save on exit right after autosave)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(root)
    for old in generations(model_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp_*"):  # left by a crash in an earlier save
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def verify(folder: Path) -> str | None:
    """None if the generation is intact, else why not."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"no readable manifest ({exc})"
    for name in FILES:
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        entry = manifest.get(name) or {}
        if path.stat().st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
            return f"{name} does not match its checksum"
    return None


STATE_MAX_BYTES = 256 << 20  # state.json holds options and up to 100,000 loss pairs: a few MB


def read_state(generation: Path) -> dict[str, Any] | None:
    """A generation's `state.json` (options, iteration, ...), unverified; None if unreadable.

    For showing and prompting without loading tensors; `load_latest` verifies before use.
    """
    path = generation / FILES[2]
    try:
        if path.stat().st_size > STATE_MAX_BYTES:  # a shared model is untrusted input
            return None
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return state if isinstance(state, dict) else None


def load_latest(model_dir: Path, map_location: str | torch.device = "cpu") -> Checkpoint | None:
    """The newest intact generation; None if the model has none at all (a new model).

    Raises UserError when generations exist but none is intact, so that nothing starts over them.
    """
    from safetensors.torch import load_file

    gens = generations(model_dir)
    if not gens:
        return None
    problems = []
    for folder in gens:
        why = verify(folder)
        if why is None:
            try:
                state = json.loads((folder / FILES[2]).read_text(encoding="utf-8"))
                if state.get("schema") != SCHEMA:
                    raise ValueError("not a FaceLab checkpoint")
                if int(state.get("version", 0)) > SCHEMA_VERSION:
                    raise UserError(f"{folder} was written by a newer FaceLab: update FaceLab")
                ckpt = Checkpoint(folder, int(state["iteration"]), load_file(str(folder / FILES[0]), device=str(map_location)),
                                  load_file(str(folder / FILES[1]), device=str(map_location)), state)  # fmt: skip
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - an unreadable generation: try the next
                why = f"unreadable ({type(exc).__name__}: {exc})"
            else:
                for skipped, reason in problems:
                    log.warning("checkpoint %s is damaged (%s): using %s instead", skipped.name, reason, folder.name)
                return ckpt
        problems.append((folder, why))
    details = "; ".join(f"{f.name}: {w}" for f, w in problems)
    raise UserError(
        f"no intact checkpoint in {model_dir} ({details}). Nothing was overwritten: restore a copy from "
        f"{Path(model_dir) / 'autobackups'} or move the model folder away to start a new one"
    )


def backup(model_dir: Path, generation: Path, keep: int = 24) -> Path:
    """Copy a generation into `autobackups/` (rotating, newest `keep` kept)."""
    root = Path(model_dir) / "autobackups"
    root.mkdir(exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
    target = root / f"{stamp}_{generation.name}"
    tmp = root / f".tmp_{target.name}"
    shutil.copytree(generation, tmp, dirs_exist_ok=True)
    os.replace(tmp, target)
    fsync_dir(root)
    for old in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return target
