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
import errno
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
    try:
        for name, tensors in ((FILES[0], weights), (FILES[1], optimizer)):
            try:
                save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp / name))
            except Exception as exc:  # safetensors reports a full disk as its own error, without an errno
                if "os error 28" in str(exc) or "No space left" in str(exc):
                    raise OSError(errno.ENOSPC, "No space left on device", str(model_dir)) from None
                raise
        full_state = {"schema": SCHEMA, "version": SCHEMA_VERSION, "iteration": iteration, **state}
        (tmp / FILES[2]).write_text(json.dumps(full_state), encoding="utf-8")
        manifest = {}
        for name in FILES:
            _fsync_file(tmp / name)
            manifest[name] = {"sha256": _sha256(tmp / name), "size": (tmp / name).stat().st_size}
        (tmp / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        _fsync_file(tmp / "manifest.json")
        fsync_dir(tmp)
    except BaseException:  # disk full, Ctrl+C: no half generation left (the older ones are untouched)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
    path = folder / "manifest.json"
    try:
        if path.stat().st_size > MANIFEST_MAX_BYTES:
            return "its manifest is not one of ours (too big)"
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        return f"no readable manifest ({exc})"
    if not isinstance(manifest, dict):
        return "its manifest is not one of ours"
    for name in FILES:
        path = folder / name
        if not path.exists():
            return f"{name} is missing"
        entry = manifest.get(name)
        entry = entry if isinstance(entry, dict) else {}
        if path.stat().st_size != entry.get("size") or _sha256(path) != entry.get("sha256"):
            return f"{name} does not match its checksum"
    return None


STATE_MAX_BYTES = 256 << 20  # state.json holds options and up to 100,000 loss pairs: a few MB
MANIFEST_MAX_BYTES = 1 << 20
_STATE_TYPES = {"options": dict, "loss_history": list, "optimizer_steps": dict, "architecture": dict, "rng": dict}


def checked_state(state: Any) -> dict[str, Any]:
    """A generation's state as FaceLab wrote it, or ValueError saying what is wrong: a shared
    model is untrusted input, and its state decides what is built and how training goes on."""
    if not isinstance(state, dict) or state.get("schema") != SCHEMA:
        raise ValueError("not a FaceLab checkpoint")
    if _count(state.get("version", 0)) > SCHEMA_VERSION:
        raise UserError("it was written by a newer FaceLab: update FaceLab")
    _count(state.get("iteration"), "iteration")
    _count(state.get("seed", 0), "seed")
    for key, kind in _STATE_TYPES.items():
        if state.get(key) is not None and not isinstance(state[key], kind):
            raise ValueError(f"its {key} is not a {kind.__name__}")
    for row in state.get("loss_history") or []:
        if not (isinstance(row, list) and row and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)):
            raise ValueError(f"its loss history holds {str(row)[:40]!r}, not numbers")
    for step in [*(state.get("optimizer_steps") or {}).values(), state.get("optimizer_step", 0)]:
        _count(step, "optimizer step")
    return state


def _count(value: Any, what: str = "version") -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 62:
        raise ValueError(f"its {what} {str(value)[:40]!r} is not a count")
    return value


def load_into(net: torch.nn.Module, ckpt: Checkpoint, prefix: str, allow_missing: bool = False) -> None:
    """Copy a generation's `<prefix>.*` tensors into `net`, refusing (UserError, one line) a
    checkpoint that does not fit: a tensor of another shape or kind, or one missing unless
    `allow_missing` (a part added to a model later). Names `net` lacks are ignored."""
    import torch

    head = prefix + "."
    sub = {k[len(head):]: v for k, v in ckpt.weights.items() if k.startswith(head)}
    state = net.state_dict()
    for key, value in sub.items():
        if key in state and (tuple(value.shape) != tuple(state[key].shape) or value.dtype.is_floating_point != state[key].dtype.is_floating_point):
            raise UserError(f"checkpoint {ckpt.folder}: {head}{key} is {tuple(value.shape)} {value.dtype}, this model needs "
                            f"{tuple(state[key].shape)} {state[key].dtype}: it was made with other options, or is damaged")  # fmt: skip
    missing = [k for k in state if k not in sub]
    if missing and not allow_missing:
        raise UserError(f"checkpoint {ckpt.folder} does not fit this model ({len(missing)} tensors missing, e.g. {head}{missing[0]})")
    with torch.no_grad():
        net.load_state_dict({k: v for k, v in sub.items() if k in state}, strict=False)


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
                if (folder / FILES[2]).stat().st_size > STATE_MAX_BYTES:
                    raise ValueError(f"its {FILES[2]} is over {STATE_MAX_BYTES >> 20} MB")
                state = checked_state(json.loads((folder / FILES[2]).read_text(encoding="utf-8")))
                ckpt = Checkpoint(folder, int(state["iteration"]), load_file(str(folder / FILES[0]), device=str(map_location)),
                                  load_file(str(folder / FILES[1]), device=str(map_location)), state)  # fmt: skip
            except UserError as exc:
                raise UserError(f"{folder}: {exc}") from None
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
