"""XSeg training (dfl-spec §7 "Training"): faces with drawn polygons from data_src and data_dst.

DFL's recipe: RMSprop lr 1e-4 with lr-dropout 0.3, mean sigmoid BCE; per sample warp + affine
(rotation +-10 deg, scale/shift +-5 %, flip p 0.4) applied to image and mask alike, then (each with
probability 1/2 or 1/4 as DFL) background mixing with another face's background, HSV shift or RGB
levels, sharpen or blur, and a nearest/bilinear down-up resize - all batched on the device.
Differences, on purpose: no JPEG re-encoding and no lens flares (neither has a device op here).
Checkpoints, crash safety, exact resume and the preview window are the main trainer's.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from facelab.core.landmarks import FACE_TYPE_CHOICES, FaceType
from facelab.errors import UserError, is_out_of_memory
from facelab.io import checkpoint
from facelab.io.faceset import Face, load_faceset
from facelab.models.registry import create_model
from facelab.nn import losses as L
from facelab.nn.augment import AugmentSettings, augment, bgr_to_hsv, hsv_to_bgr
from facelab.nn.device import resolve_device
from facelab.nn.optim import RMSprop
from facelab.options import option
from facelab.training.control import TrainingControl
from facelab.training.data import BatchSampler, DeviceFaceset, FacesetCache
from facelab.training.memory import tune_allocator
from facelab.training.preview import preview_grid
from facelab.training.trainer import CHECK_EVERY, _bytes_b64, load_slots, restore_rng

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class XSegTrainOptions:
    face_type: str = option("Face type", "wf", choices=FACE_TYPE_CHOICES, fixed=True,
                            help="the framing the masks are learned (and later applied) in")  # fmt: skip
    batch_size: int = option("Batch size", 4, min=2, max=16, help="faces per step")
    pretrain: bool = option("Enable pretraining mode", False, help="learn faces (grey, no skips) from --pretraining-data-dir")
    target_iter: int = option("Target iteration", 0, min=0, max=10**9, help="stop and save here; 0 = never")
    autosave_minutes: float = option("Autosave every N minutes", 25.0, min=0, max=1440, ask=False, help="minutes between saves")
    resolution: int = option("Resolution", 256, min=64, max=512, ask=False, fixed=True, help="DFL's XSeg is 256")
    base: int = option("Base width", 32, min=4, max=64, ask=False, fixed=True, help="DFL's XSeg is 32")
    device: str = option("Device", "auto", ask=False, help="auto, cpu, cuda, cuda:1, mps")
    preview: bool = option("Preview window", True, ask=False, help="--no-preview trains headless")
    seed: int = option("Seed", 0, min=0, max=2**31 - 1, ask=False, help="random seed of a new model (0 = random)")
    pretraining_data_dir: str = option("Pretraining faceset", "", ask=False, help="faces for pretrain mode")


RUN_ONLY = ("autosave_minutes", "device", "preview", "seed", "pretraining_data_dir", "target_iter")


def labelled_faces(folders: list[Path]) -> list[Face]:
    """Faces with at least one drawn polygon; when there are none, faces with an applied mask."""
    faces = [f for folder in folders if folder.is_dir() for f in load_faceset(folder) if f.meta is not None]
    drawn = [f for f in faces if any(len(p.points) >= 3 for p in f.meta.xseg_polygons)]
    return drawn or [f for f in faces if f.meta.xseg_mask_png is not None]


def _per_sample(n: int, p: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen, device=device) < p).view(n, 1, 1, 1)


def degrade(img: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """DFL's XSeg colour/quality augmentations, batched: background mix, HSV or levels, sharpen or
    blur, down-up resize."""
    n, device = img.shape[0], img.device
    u = lambda lo, hi: torch.rand(n, 1, 1, 1, generator=gen, device=device) * (hi - lo) + lo  # noqa: E731
    # background of another face, where neither face is
    other, other_mask = img.roll(1, 0), mask.roll(1, 0)
    outside = (1 - mask) * (1 - other_mask)
    r = u(0.15, 1.0)
    mixed = img * (1 - outside) + (img * r + other * (1 - r)) * outside
    img = torch.where(_per_sample(n, 0.5, gen, device), mixed, img)
    # HSV shift, or RGB levels
    h, s, v = bgr_to_hsv(img)
    hsv = hsv_to_bgr((h + u(0, 1)[:, 0]) % 1.0, (s + u(-0.5, 0.5)[:, 0]).clamp(0, 1), (v + u(-0.5, 0.5)[:, 0]).clamp(0, 1))
    black, white, gamma = u(0, 0.25), u(0.75, 1.0), u(0.5, 1.5)
    levels = ((img - black) / (white - black)).clamp(0, 1) ** gamma
    pick = _per_sample(n, 0.5, gen, device)
    img = torch.where(pick, hsv, levels)
    # sharpen (1/4) or blur (1/4)
    blurred = L.gaussian_blur(img, 1.5)
    sharp = (img + u(0, 1) * (img - blurred)).clamp(0, 1)
    roll = torch.rand(n, 1, 1, 1, generator=gen, device=device)
    img = torch.where(roll < 0.25, sharp, torch.where(roll < 0.5, blurred, img))
    # nearest or bilinear down-up resize (1/4)
    res = img.shape[-1]
    small = max(8, int(res * float(u(0.25, 1.0)[0])))
    mode = "nearest" if torch.rand(1, generator=gen, device=device).item() < 0.5 else "bilinear"
    kw = {} if mode == "nearest" else {"align_corners": False}
    down_up = F.interpolate(F.interpolate(img, size=small, mode=mode, **kw), size=res, mode=mode, **kw)
    return torch.where(_per_sample(n, 0.25, gen, device), down_up, img).clamp(0, 1)


class XSegTrainer:
    def __init__(self, model_dir: Path, opts: XSegTrainOptions, folders: list[Path]):
        self.model_dir = Path(model_dir)
        self.opts = opts
        self.device = resolve_device(opts.device)
        self.face_type = FaceType.parse(opts.face_type)
        self.res = opts.resolution
        ckpt = checkpoint.load_latest(self.model_dir)
        self.seed = (ckpt.state.get("seed") if ckpt else 0) or (opts.seed or random.SystemRandom().randrange(1, 2**31))
        torch.manual_seed(self.seed)
        self.model = create_model("xseg", opts.base, opts.resolution).to(self.device)
        tune_allocator(low_memory=False)  # freed memory kept for the next step, as in SAEHD training
        # (unlike SAEHD, the model stays NCHW: channels-last measured no faster for XSeg)
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.seed)
        self.cpu_gen = torch.Generator()
        self.cpu_gen.manual_seed(self.seed + 1)
        self.optimizer = RMSprop(self.model.parameters(), lr=1e-4, lr_dropout=0.3, lr_cos=500, generator=self.gen)
        self.iteration, self.loss_history = 0, []
        if ckpt is not None:
            checkpoint.load_into(self.model, ckpt, "model")
            params = dict(self.model.named_parameters())
            load_slots(self.optimizer, params, ckpt, "", ckpt.state.get("optimizer_step", 0))
            self.iteration, self.loss_history = ckpt.iteration, ckpt.state.get("loss_history") or []
            restore_rng(self.gen, self.cpu_gen, ckpt)
        if opts.pretrain:
            if not opts.pretraining_data_dir:
                raise UserError("XSeg pretrain mode needs --pretraining-data-dir PATH (an aligned faceset)")
            faces = [f for f in load_faceset(Path(opts.pretraining_data_dir)) if f.meta is not None]
            source = "train"
        else:
            faces = labelled_faces(folders)
            source = "labels"
        if not faces:
            raise UserError("no face has XSeg polygons yet: draw some with 5_xseg_edit (a few dozen faces are enough)")
        cache = FacesetCache.from_faces(faces, folders[0], self.model_dir / "cache", "xseg", self.res, self.face_type, source)
        self.data = DeviceFaceset(cache, self.device)
        self.sampler = BatchSampler(cache.yaws, self.cpu_gen)
        if ckpt is not None and ckpt.state.get("sampler"):
            self.sampler.order = [i for i in ckpt.state["sampler"] if i < self.sampler.n]
        self.aug = AugmentSettings(rotation_deg=10, scale=0.05, shift=0.05, flip=True, random_warp=True, warp_targets=True)
        self._pending = torch.zeros((), device=self.device)
        self._count = 0
        self._updating = False
        log.info("XSeg: %d labelled faces, %s at %d px, starting at iteration %d", len(cache), self.face_type.dfl_name,
                 self.res, self.iteration)  # fmt: skip

    def step(self) -> torch.Tensor:
        batch = augment(self.data.gather(self.sampler.take(self.opts.batch_size)), self.aug, self.gen)
        mask = (batch.mask > 0.5).float()
        if self.opts.pretrain:  # DFL: the same warped face in grey, skips zeroed
            grey = batch.target.mean(1, keepdim=True)
            pred = torch.sigmoid(self.model(batch.target, pretrain=True))
            loss = (L.structure_loss(grey, pred, 256) + 10 * (grey - pred).square().mean(dim=(1, 2, 3))).mean()
        else:
            logits = self.model(degrade(batch.target, mask, self.gen))
            loss = F.binary_cross_entropy_with_logits(logits, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._updating = True
        self.optimizer.step()
        self._updating = False
        self.iteration += 1
        self._pending += loss.detach()
        self._count += 1
        return loss.detach()

    def _check(self) -> float | None:
        if not self._count:
            return None
        value = float(self._pending / self._count)
        self._pending.zero_()
        self._count = 0
        if not math.isfinite(value):
            ckpt = checkpoint.load_latest(self.model_dir, map_location=self.device)
            if ckpt is None:
                raise UserError("XSeg training collapsed (NaN) before its first save: start again")
            log.warning("the XSeg loss became NaN at iteration %d: rolled back to iteration %d", self.iteration, ckpt.iteration)
            checkpoint.load_into(self.model, ckpt, "model")
            self.iteration = ckpt.iteration
            return None
        self.loss_history.append([round(value, 6), round(value, 6)])
        return value

    def save(self) -> Path:
        self._check()
        names = {id(p): n for n, p in self.model.named_parameters()}
        slots = {f"{k}.{names[id(p)]}": v for p, st in self.optimizer.state.items() for k, v in st.items() if torch.is_tensor(v)}
        steps = [st.get("step", 0) for st in self.optimizer.state.values()]
        from facelab.options import options_to_dict

        state = {"model": "xseg", "options": {k: v for k, v in options_to_dict(self.opts).items() if k not in RUN_ONLY},
                 "seed": self.seed, "loss_history": self.loss_history[-100_000:], "optimizer_step": steps[0] if steps else 0,
                 "rng": {"device": _bytes_b64(self.gen.get_state()), "cpu": _bytes_b64(self.cpu_gen.get_state())},
                 "sampler": self.sampler.order}  # fmt: skip
        return checkpoint.save(self.model_dir, self.iteration, {f"model.{k}": v for k, v in self.model.state_dict().items()}, slots, state)

    def preview(self, count: int = 4, offset: int = 0) -> np.ndarray:
        """Rows of [face, drawn mask over the face, predicted mask over the face]."""
        idx = (torch.arange(count) + offset) % len(self.data.cache)
        batch = augment(self.data.gather(idx), AugmentSettings(random_warp=False, rotation_deg=0, scale=0, shift=0),
                        torch.Generator(device=self.device))  # fmt: skip
        self.model.eval()
        try:
            pred = self.model.predict(batch.target)
        finally:
            self.model.train()
        tint = lambda m: batch.target * 0.5 + torch.cat([m * 0.5, m * 0.2, torch.zeros_like(m)], 1)  # noqa: E731
        return preview_grid([batch.target, tint(batch.mask), tint(pred)])

    def run(self, stop: threading.Event, console: Callable[[str], None], control: TrainingControl | None = None) -> dict:
        last_save = time.monotonic()
        first = self.iteration
        while not (self.opts.target_iter and self.iteration >= self.opts.target_iter) and not stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - out of memory is the user's to fix; the rest is re-raised
                if not is_out_of_memory(exc):
                    raise
                from facelab.training.memory import after_out_of_memory

                save = None if self._updating else self.save
                raise after_out_of_memory(self.device, self.opts.batch_size, self.res, self.iteration, self.model_dir, save,
                                          [self.optimizer]) from None  # fmt: skip
            if self.iteration == 1 or self.iteration % CHECK_EVERY == 0:
                value = self._check()
                if value is not None:
                    console(f"[{time.strftime('%H:%M:%S')}][#{self.iteration:06d}][{value:.4f}]")
                    if control is not None:
                        control.publish(iteration=self.iteration, loss_history=list(self.loss_history))
            if control is not None:
                if control.take("save_requested"):
                    self.save()
                if control.take("backup_requested"):
                    checkpoint.backup(self.model_dir, self.save())
                if control.take("refresh_requested"):
                    control.publish(preview=self.preview(offset=control.sample_offset))
                if control.quit_requested:
                    break
            if self.iteration == 1 or time.monotonic() - last_save >= self.opts.autosave_minutes * 60:
                self.save()
                last_save = time.monotonic()
        saved = self.save()
        if control is not None:
            control.publish(preview=self.preview(), iteration=self.iteration, loss_history=list(self.loss_history))
        return {"iterations": self.iteration - first, "iteration": self.iteration, "saved": str(saved)}
