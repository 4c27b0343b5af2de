"""Training timelapse (faceswap's): the same few faces at every save, so the user can watch the
model learn; `timelapse-video` turns the images into an mp4.

The faces are the user's (`--timelapse-src DIR`, `--timelapse-dst DIR`: a few aligned faces,
cached at the model's framing like the training sets) or, by default, an evenly spread sample of
each training faceset, chosen once and kept by name in `model/<name>/timelapse/faces.json` so
every image of a model shows the same faces, run after run. An image per save:
`model/<name>/timelapse/<iteration, 7 digits>.jpg`, rows of [src, src->src, dst, dst->dst, dst->src].
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab.core.landmarks import FaceType
from facelab.io.frames import write_text_atomic
from facelab.training.data import DeviceFaceset, FacesetCache

log = logging.getLogger(__name__)

FACES = 4  # rows of the default sample
MAX_FACES = 8  # rows taken from a folder the user gave
FOLDER = "timelapse"


@dataclass
class TimelapseFaces:
    """Where one side's timelapse faces are and which ones."""

    data: DeviceFaceset
    index: torch.Tensor


def spread(count: int, k: int = FACES) -> list[int]:
    """`k` indices evenly spread over `count` items, first and last included (fewer if count < k)."""
    if count <= 0:
        return []
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, min(k, count))})


def choose_faces(model_dir: Path, training: dict[str, DeviceFaceset], folders: dict[str, str], resolution: int,
                 face_type: FaceType, mask_source: str, device: torch.device) -> dict[str, TimelapseFaces]:  # fmt: skip
    """The faces of each side's timelapse: from the user's folder, or the kept (else a new) sample."""
    out_dir = model_dir / FOLDER
    kept_path = out_dir / "faces.json"
    try:
        kept = json.loads(kept_path.read_text())
        kept = kept if isinstance(kept, dict) else {}
    except (OSError, ValueError):
        kept = {}
    chosen: dict[str, TimelapseFaces] = {}
    names: dict[str, list[str]] = {}
    for side in ("src", "dst"):
        if folders.get(side):
            cache = FacesetCache.load_or_build(Path(folders[side]).expanduser(), model_dir / "cache", f"timelapse_{side}",
                                               resolution, face_type, mask_source)  # fmt: skip
            chosen[side] = TimelapseFaces(DeviceFaceset(cache, device), torch.arange(min(len(cache), MAX_FACES)))
            continue
        data = training[side]
        where = {name: i for i, name in enumerate(data.cache.names)}
        wanted = kept.get(side) if isinstance(kept.get(side), list) else []
        index = [where[n] for n in wanted if isinstance(n, str) and n in where]
        if not index:  # first run, or the kept faces left the faceset: a new sample
            index = spread(len(data.cache))
        names[side] = [data.cache.names[i] for i in index]
        chosen[side] = TimelapseFaces(data, torch.tensor(index, dtype=torch.long))
    if names and names != {k: kept.get(k) for k in names}:
        write_text_atomic(kept_path, json.dumps({**kept, **names}, indent=1))
    return chosen


def image_path(model_dir: Path, iteration: int) -> Path:
    return model_dir / FOLDER / f"{iteration:07d}.jpg"


def timelapse_images(model_dir: Path) -> list[Path]:
    """The timelapse images of a model, oldest first."""
    folder = model_dir / FOLDER
    return sorted(p for p in folder.glob("*.jpg") if p.stem.isdigit()) if folder.is_dir() else []
