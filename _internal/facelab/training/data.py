"""Training data: each faceset decoded once into a uint8 cache, batches sampled and augmented on
the training device (dfl-spec §9; ARCHITECTURE §5).

The cache is one memory-mapped file per side in the model folder, `cache/<side>.u8` with a JSON
header `cache/<side>.json`: N x 5 x R x R uint8 = BGR, full mask, eyes-mouth mask, at the model's
resolution and face type. It is rebuilt when the faceset (names, sizes, times) or the model's
framing changes. Per face:
- the image is re-framed when the faceset's face type differs from the model's (through the source
  landmarks, cubic, replicated border), else resized (cubic);
- the full mask is the applied XSeg mask when the face has one, else the landmark hull;
- the eyes-mouth mask is DFL's (eyes + mouth inside the hull).

On a GPU the whole cache is uploaded once when it fits; on the CPU batches are gathered from the
memory map. The step never waits on per-sample Python work.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab.core.landmarks import FaceType, estimate_pitch_yaw_roll, get_transform_mat, transform_points
from facelab.core.masks import LANDMARK_MASKS, eyes_mouth_mask, hull_mask
from facelab.errors import UserError
from facelab.io.faceset import Face, load_faceset
from facelab.io.frames import decode_image, write_text_atomic
from facelab.log import progress

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CHANNELS = 5


def _signature(faces: list[Face], folder: Path, resolution: int, face_type: FaceType) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{resolution}|{face_type.dfl_name}|".encode())
    for f in faces:
        st = f.path.stat() if f.path is not None else None
        h.update(f"{f.name}|{st.st_size if st else ''}|{st.st_mtime_ns if st else ''}\n".encode())
    pack = folder / "faceset.fpk"
    if pack.exists():
        h.update(f"pack|{pack.stat().st_size}|{pack.stat().st_mtime_ns}".encode())
    return h.hexdigest()


def prepare_face(face: Face, resolution: int, face_type: FaceType, mask_source: str = "train") -> tuple[np.ndarray, float] | None:
    """One face as 5 x R x R uint8 (BGR, mask, eyes-mouth) in the model's framing, and its yaw.

    mask_source: "train" = the applied XSeg mask, else the landmark hull (SAEHD);
        "labels" = the drawn XSeg polygons, else the applied mask binarised at 0.5 (XSeg training);
        "components" / "extended" = faceswap's landmark masks.
    """
    meta = face.meta
    if meta is None:
        return None
    img = decode_image(face.read_bytes())
    if img is None:
        return None
    h, w = img.shape[:2]
    if meta.face_type != face_type and meta.image_to_face_mat is not None and meta.source_landmarks is not None:
        new_mat = get_transform_mat(meta.source_landmarks, resolution, face_type)
        old_inv = cv2.invertAffineTransform(meta.image_to_face_mat)
        m = (np.vstack([new_mat, [0, 0, 1]]) @ np.vstack([old_inv, [0, 0, 1]]))[:2]
    else:
        m = np.array([[resolution / w, 0, 0], [0, resolution / h, 0]])
    out = cv2.warpAffine(img, m, (resolution, resolution), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    lm = transform_points(meta.landmarks, m)
    applied = meta.xseg_mask() if mask_source not in LANDMARK_MASKS else None
    if mask_source == "labels":
        if meta.xseg_polygons:
            from facelab.core.masks import polygons_mask

            applied = polygons_mask((h, w), [(p.include, p.points) for p in meta.xseg_polygons])
        elif applied is not None:
            applied = (applied > 0.5).astype(np.float32)
        else:
            return None
    if applied is not None:
        mh, mw = applied.shape[:2]
        to_img = np.array([[w / mw, 0, 0], [0, h / mh, 0]])
        mm = (np.vstack([m, [0, 0, 1]]) @ np.vstack([to_img, [0, 0, 1]]))[:2]
        mask = cv2.warpAffine(applied[..., 0], mm, (resolution, resolution), flags=cv2.INTER_LINEAR)
        if mask_source == "labels":
            mask = (mask > 0.5).astype(np.float32)
    elif mask_source in LANDMARK_MASKS:
        mask = LANDMARK_MASKS[mask_source]((resolution, resolution), lm)[..., 0]
    else:
        mask = hull_mask((resolution, resolution), lm, meta.eyebrows_expand_mod)[..., 0]
    em = eyes_mouth_mask((resolution, resolution), lm, meta.eyebrows_expand_mod)[..., 0]
    planes = np.concatenate([out.transpose(2, 0, 1), np.rint(np.stack([mask, em]) * 255).clip(0, 255).astype(np.uint8)])
    yaw = estimate_pitch_yaw_roll(lm, resolution)[1]
    return planes, yaw


@dataclass
class FacesetCache:
    """The uint8 cache of one side: `images` N x 5 x R x R (a memory map), `yaws` (N,)."""

    images: np.ndarray
    yaws: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def load_or_build(cls, folder: Path, cache_dir: Path, side: str, resolution: int, face_type: FaceType,
                      mask_source: str = "train") -> FacesetCache:  # fmt: skip
        faces = [f for f in load_faceset(folder) if f.meta is not None]
        if not faces:
            raise UserError(f"{folder} has no faces with metadata: extract faces first (scripts 4 / 5)")
        return cls.from_faces(faces, folder, cache_dir, side, resolution, face_type, mask_source)

    @classmethod
    def from_faces(cls, faces: list[Face], folder: Path, cache_dir: Path, side: str, resolution: int, face_type: FaceType,
                   mask_source: str = "train") -> FacesetCache:  # fmt: skip
        """The cache of `faces` (rebuilt when they, the framing or the mask source change)."""
        sig = _signature(faces, folder, resolution, face_type) + mask_source
        header_path, data_path = cache_dir / f"{side}.json", cache_dir / f"{side}.u8"
        try:
            header = json.loads(header_path.read_text())
            if header["signature"] == sig and data_path.stat().st_size == header["count"] * CHANNELS * resolution**2:
                images = np.memmap(data_path, np.uint8, "r", shape=(header["count"], CHANNELS, resolution, resolution))
                return cls(images, np.asarray(header["yaws"], np.float32), header["names"])
        except (OSError, ValueError, KeyError):
            pass
        return cls._build(faces, cache_dir, side, resolution, face_type, sig, mask_source)

    @classmethod
    def _build(cls, faces: list[Face], cache_dir: Path, side: str, resolution: int, face_type: FaceType, sig: str,
               mask_source: str = "train") -> FacesetCache:  # fmt: skip
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{side}.u8.tmp"
        _preallocate(tmp, len(faces) * CHANNELS * resolution * resolution, side)
        images = np.memmap(tmp, np.uint8, "r+", shape=(len(faces), CHANNELS, resolution, resolution))
        yaws, names = [], []
        k = 0
        with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
            results = pool.map(lambda f: prepare_face(f, resolution, face_type, mask_source), faces)
            for face, result in zip(faces, progress(results, total=len(faces), desc=f"caching {side} faces", unit="face")):
                if result is None:
                    log.warning("%s cannot be read: left out of training", face.name)
                    continue
                images[k], yaw = result
                yaws.append(yaw)
                names.append(face.name)
                k += 1
        images.flush()
        del images
        data_path = cache_dir / f"{side}.u8"
        with open(tmp, "r+b") as fh:
            fh.truncate(k * CHANNELS * resolution * resolution)
        os.replace(tmp, data_path)
        write_text_atomic(cache_dir / f"{side}.json", json.dumps({"signature": sig, "count": k, "yaws": yaws, "names": names}))
        log.info("cached %d %s faces at %d px in %s", k, side, resolution, data_path)
        images = np.memmap(data_path, np.uint8, "r", shape=(k, CHANNELS, resolution, resolution))
        return cls(images, np.asarray(yaws, np.float32), names)


def _preallocate(path: Path, size: int, side: str) -> None:
    """The cache file at its full size on disk, not sparse: a memory map that runs out of disk
    later kills the process (SIGBUS) with no message. Checks the free space first."""
    free = shutil.disk_usage(path.parent).free + (path.stat().st_size if path.exists() else 0)
    need = size + (64 << 20)  # and room for checkpoints and previews
    if free < need:
        raise UserError(f"the disk is too full for the {side} face cache: it needs {need / 2**20:,.0f} MB in {path.parent}, "
                        f"the disk has {free / 2**20:,.0f} MB free: free some space (or use a lower resolution) and run again")  # fmt: skip
    with open(path, "wb") as fh:
        if size and hasattr(os, "posix_fallocate"):
            try:
                os.posix_fallocate(fh.fileno(), 0, size)
                return
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise  # said in one line by the CLI (disk full, with the path)
        fh.truncate(size)  # Windows (NTFS allocates on extension) or a file system without fallocate
        if size:
            fh.seek(size - 1)
            fh.write(b"\0")


class BatchSampler:
    """Indices in shuffled epochs without replacement; or, with uniform_yaw, a random yaw bin
    (128 on [-1.2, 1.2], empty ones dropped) then a random face in it (spec §9)."""

    def __init__(self, yaws: np.ndarray, gen: torch.Generator, uniform_yaw: bool = False):
        self.n = len(yaws)
        self.gen = gen
        self.order: list[int] = []
        self.bins = None
        if uniform_yaw:
            edges = np.linspace(-1.2, 1.2, 129)
            idx = np.clip(np.searchsorted(edges, -yaws, side="right") - 1, 0, 127)
            self.bins = [np.nonzero(idx == b)[0] for b in range(128) if (idx == b).any()]

    def take(self, batch: int) -> torch.Tensor:
        if self.bins is not None:
            picks = torch.randint(0, len(self.bins), (batch,), generator=self.gen).tolist()
            return torch.tensor([int(self.bins[b][torch.randint(0, len(self.bins[b]), (1,), generator=self.gen)]) for b in picks])
        out = []
        while len(out) < batch:
            if not self.order:
                self.order = torch.randperm(self.n, generator=self.gen).tolist()
            out.append(self.order.pop())
        return torch.tensor(out)


class DeviceFaceset:
    """A side's cache where the step wants it: uploaded whole to a GPU when it fits, else
    batches are gathered from the memory map and copied over."""

    def __init__(self, cache: FacesetCache, device: torch.device, max_gpu_bytes: int = 4 << 30):
        self.cache = cache
        self.device = device
        self.on_device = None
        if device.type != "cpu" and cache.images.nbytes <= max_gpu_bytes:
            self.on_device = torch.from_numpy(np.ascontiguousarray(cache.images)).to(device)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        if self.on_device is not None:
            return self.on_device[idx.to(self.device)]
        rows = np.sort(idx.numpy())  # memory-map friendly
        order = np.argsort(np.argsort(idx.numpy()))
        batch = torch.from_numpy(np.ascontiguousarray(self.cache.images[rows][order]))
        return batch.to(self.device, non_blocking=True)
