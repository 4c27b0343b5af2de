"""The SAEHD / Quick96 training loop (dfl-spec §8.4-8.7, §10), read top to bottom:

1. set-up: model, optimiser, data caches, samplers, RNG, from the newest intact checkpoint or new;
2. `step()`: sample -> augment on the device -> forward -> DFL's losses -> backward -> update;
3. `run()`: steps until the target iteration or a stop request, with a check every
   `CHECK_EVERY` steps (the only host sync: loss values for the console line, NaN / spike
   detection with rollback), autosave, autobackup and preview history off the training thread.

Determinism: every random draw (sampling, augmentation, lr dropout) comes from one generator whose
state, with the sampler's epoch order, is saved in each checkpoint, so on the CPU a resumed run
continues bit for bit as if it had never stopped.
"""

from __future__ import annotations

import base64
import logging
import math
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from facelab.core.landmarks import FaceType
from facelab.errors import UserError, is_out_of_memory
from facelab.io import checkpoint
from facelab.models.registry import create_model
from facelab.models import store
from facelab.models.saehd import SAEHD
from facelab.nn import losses as L
from facelab.nn.augment import AugmentSettings, augment
from facelab.nn.device import autocast_dtype, cpu_has_native_bf16, prefers_channels_last, resolve_device
from facelab.nn.optim import AdaBelief, RMSprop
from facelab.options import options_to_dict
from facelab.training.control import TrainingControl
from facelab.training.data import BatchSampler, DeviceFaceset, FacesetCache
from facelab.training.distributed import Rank, agree, all_reduce_
from facelab.training.memory import tune_allocator
from facelab.training.options import TrainOptions, model_options

log = logging.getLogger(__name__)

CHECK_EVERY = 25
SPIKE_FACTOR = 4.0
MAX_ROLLBACKS = 3
LOSS_HISTORY = 100_000


@dataclass
class StepLosses:
    src: torch.Tensor  # batch means, still on the device
    dst: torch.Tensor


def _missing_kernel(exc: BaseException) -> bool:
    """A RuntimeError of an operation with no kernel for the autocast dtype on this device."""
    text = str(exc)
    return isinstance(exc, (RuntimeError, NotImplementedError)) and ("not implemented for" in text or "no kernel image" in text)


def _bytes_b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode("ascii")


def _b64_bytes(s: str) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(base64.b64decode(s), np.uint8).copy())


def load_slots(opt: torch.optim.Optimizer, params: dict[str, torch.Tensor], ckpt: checkpoint.Checkpoint, head: str,
               step: int) -> None:  # fmt: skip
    """An optimiser's saved slots (`<head><slot>.<parameter>`) back onto its parameters; a slot
    of the wrong shape (a damaged or hand-made checkpoint) is dropped, so that moment restarts."""
    dropped = 0
    for key, value in ckpt.optimizer.items():
        if not key.startswith(head):
            continue
        slot, _, pname = key[len(head):].partition(".")
        if pname not in params:
            continue
        if tuple(value.shape) != tuple(params[pname].shape) or not value.is_floating_point():
            dropped += 1
            continue
        # in the weight's own memory layout (channels-last): an update across two layouts is slow
        opt.state[params[pname]][slot] = torch.empty_like(params[pname]).copy_(value)
        opt.state[params[pname]]["step"] = step
    if dropped:
        log.warning("checkpoint %s: %d optimiser slots do not fit their weights; they start again", ckpt.folder.name, dropped)


def restore_rng(gen: torch.Generator, cpu_gen: torch.Generator, ckpt: checkpoint.Checkpoint) -> None:
    """The random generators as they were at the save (same batches and warps on resume)."""
    rng = ckpt.state.get("rng")
    if not rng:
        return
    try:
        gen.set_state(_b64_bytes(rng["device"]))
        cpu_gen.set_state(_b64_bytes(rng["cpu"]))
    except (KeyError, TypeError, ValueError, RuntimeError):
        log.warning("checkpoint %s: its random state is unreadable; training goes on with a fresh one", ckpt.folder.name)


class Trainer:
    def __init__(self, model_dir: Path, opts: TrainOptions, src_dir: Path, dst_dir: Path, rank: Rank | None = None):
        self.model_dir = Path(model_dir)
        self.rank = rank or Rank()
        if opts.batch_size == 0:  # `auto` is made a number by the stage (training.memory); a direct caller gets DFL's 8
            opts = replace(opts, batch_size=8)
        self.opts = opts
        self.spec = store.spec(opts.model)
        self.quick = self.spec.fixed_recipe  # DFL's Quick96 recipe: batch 4, random warp, no options
        self.device = resolve_device(opts.device)
        self.amp_dtype = autocast_dtype(self.device, opts.precision)
        if self.device.type == "cpu" and self.rank.world > 1 and opts.precision == "auto":
            self.amp_dtype = None  # several CPU processes (gloo): fp32, the set-up that was checked
        if self.device.type == "cpu" and self.amp_dtype is not None and not cpu_has_native_bf16() and self.rank.is_main:
            log.warning("this CPU has no native bf16: training in bf16 will be slower than fp32 (--precision fp32)")
        self.arch = self.spec.architecture(options_to_dict(opts))
        try:
            self.arch.check()
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.res = self.arch.resolution
        self.face_type = self.spec.face_type(options_to_dict(opts))

        ckpt = checkpoint.load_latest(self.model_dir)  # raises rather than start over a damaged model
        seed = (ckpt.state.get("seed") if ckpt else 0) or (opts.seed or random.SystemRandom().randrange(1, 2**31))
        self.seed = seed
        torch.manual_seed(seed)
        self.model: SAEHD = create_model(opts.model, self.arch).to(self.device)
        self.code_d = self.gan_d = None
        if not self.quick and opts.true_face_power > 0 and self.arch.kind == "df":
            code_res = self.res // (32 if "d" in self.arch.opts else 16) * (1 if "t" in self.arch.opts else 2)
            self.code_d = L.CodeDiscriminator(self.arch.ae_dims, code_res).to(self.device)
        if not self.quick and opts.gan_power > 0:
            self.gan_d = L.PatchDiscriminator(opts.gan_patch_size or self.res // 8, opts.gan_dims).to(self.device)
        # not for CPU processes together (gloo aborts on channels-last gradients)
        if prefers_channels_last(self.device) and (self.device.type != "cpu" or self.rank.world == 1):
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.set_gradient_checkpointing(opts.gradient_checkpointing)
        tune_allocator(low_memory=opts.gradient_checkpointing)
        # fp16 needs its loss scaled so that small gradients do not underflow (bf16 and fp32 do not)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp_dtype == torch.float16 else None
        # --compile on a GPU only: on a CPU (PyTorch 2.13, oneDNN) the compiled step measured 1.1-1.4x
        # slower than the plain one, and it crashed (a segfault) after a run in another precision
        # and once on a fresh start
        self.compiling = opts.compile and self.device.type != "cpu"
        if opts.compile and not self.compiling:
            log.warning("--compile is not used on a CPU (slower there, and PyTorch's compiled step is not reliable on one); training uncompiled")
        # the module stays the one whose state is saved; compiling / DDP wrap only the call
        if self.rank.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self._forward = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self._forward = torch.compile(self.model) if self.compiling else self.model

        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(seed)
        self.cpu_gen = torch.Generator()
        self.cpu_gen.manual_seed(seed + 1)
        self.optimizer = self._make_optimizer(self.model.parameters())
        # low-memory mode: with gradient checkpointing each weight is also updated as soon as its
        # gradient is complete, so the gradients never all exist at once (not with clipping, which
        # needs them all, nor with several ranks, the fp16 scaler or torch.compile)
        self.update_in_backward = (opts.gradient_checkpointing and not opts.clipgrad and self.rank.world == 1
                                   and self.scaler is None and not self.compiling)  # fmt: skip
        if self.update_in_backward:
            for p in self.model.parameters():
                p.register_post_accumulate_grad_hook(lambda p: self.optimizer.step_now(p))
        self.d_optimizers = {name: AdaBelief(net.parameters(), lr=5e-5) for name, net in self._discriminators().items()}

        self.iteration = 0
        self.loss_history: list[list[float]] = []
        sampler_state = None
        if ckpt is not None:
            self._load(ckpt)
            sampler_state = ckpt.state.get("samplers")
            if ckpt.state.get("options", {}).get("pretrain") and not opts.pretrain:
                self._end_pretraining()
        self._pending = torch.zeros(2, device=self.device)
        self._bad = torch.zeros((), dtype=torch.bool, device=self.device)
        self._count = 0

        pre = Path(opts.pretraining_data_dir) if opts.pretrain and opts.pretraining_data_dir else None
        if opts.pretrain and pre is None:
            raise UserError("pretrain mode needs --pretraining-data-dir PATH (an aligned faceset of many people)")
        cache_dir = self.model_dir / "cache"
        mask = "train" if opts.mask_type == "auto" else opts.mask_type
        many = self.rank.world > 1
        if many and not self.rank.is_main:
            torch.distributed.barrier()  # rank 0 builds the caches first; the others read them
        self.data = {
            "src": DeviceFaceset(FacesetCache.load_or_build(pre or src_dir, cache_dir, "pretrain" if pre else "src", self.res, self.face_type, mask), self.device),
            "dst": DeviceFaceset(FacesetCache.load_or_build(pre or dst_dir, cache_dir, "pretrain" if pre else "dst", self.res, self.face_type, mask), self.device),
        }  # fmt: skip
        if many and self.rank.is_main:
            torch.distributed.barrier()
        uniform = opts.uniform_yaw or opts.pretrain
        self.samplers = {side: BatchSampler(self.data[side].cache.yaws, self.cpu_gen, uniform) for side in ("src", "dst")}
        if sampler_state:
            for side, order in sampler_state.items():
                if side in self.samplers and all(i < self.samplers[side].n for i in order):
                    self.samplers[side].order = list(order)
        warp = True if self.quick else (opts.random_warp and not opts.pretrain)
        self.aug = {
            "src": AugmentSettings(flip=False if self.quick else (opts.random_src_flip or opts.pretrain), random_warp=warp,
                                   hsv_power=0.0 if (self.quick or opts.pretrain) else opts.random_hsv_power),
            "dst": AugmentSettings(flip=False if self.quick else (opts.random_dst_flip or opts.pretrain), random_warp=warp),
        }  # fmt: skip
        self._last_batch = None
        self._rollbacks = 0
        self._updating = False  # inside an optimiser update: the weights are half-written
        self._previews = ThreadPoolExecutor(1, thread_name_prefix="preview")
        self._timelapse = None  # side -> TimelapseFaces
        self._timelapse_at = -1
        if opts.timelapse and self.rank.is_main and (opts.timelapse_src or opts.timelapse_dst):
            self._choose_timelapse()  # a folder without faces is said now, not after the first save

    # ---------------------------------------------------------------- set-up helpers

    def _make_optimizer(self, params):  # noqa: ANN001, ANN202
        if self.quick:
            return RMSprop(params, lr=2e-4, lr_dropout=0.3, lr_cos=500, generator=self.gen)
        use_dropout = self.opts.lr_dropout in ("y", "cpu") and not self.opts.pretrain
        kw = dict(lr=5e-5, lr_dropout=0.3 if use_dropout else 1.0, lr_cos=500 if use_dropout else 0,
                  clipnorm=1.0 if self.opts.clipgrad else 0.0, generator=self.gen)  # fmt: skip
        return AdaBelief(params, **kw) if self.opts.adabelief else RMSprop(params, **kw)

    def _discriminators(self) -> dict[str, torch.nn.Module]:
        return {name: net for name, net in (("code_d", self.code_d), ("gan_d", self.gan_d)) if net is not None}

    def _named_modules(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model, **self._discriminators()}

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"model": self.optimizer, **self.d_optimizers}

    def _end_pretraining(self) -> None:
        """Pretraining turned off: iteration 0 and fresh inter layers, as DFL does."""
        log.info("pretraining ended: iteration reset to 0 and the inter layers re-initialised")
        self.iteration = 0
        inters = [self.model.inter] if self.arch.kind == "df" else [self.model.inter_AB, self.model.inter_B]
        for inter in inters:
            for m in inter.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                    torch.nn.init.xavier_uniform_(m.weight)
                    torch.nn.init.zeros_(m.bias)
        self.optimizer = self._make_optimizer(self.model.parameters())

    # ---------------------------------------------------------------- state

    def _state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
        weights, slots, steps = {}, {}, {}
        for prefix, net in self._named_modules().items():
            for name, tensor in net.state_dict().items():
                weights[f"{prefix}.{name}"] = tensor
        for prefix, opt in self._optimizers().items():
            names = {id(p): n for n, p in self._named_modules()[prefix].named_parameters()}
            for p, st in opt.state.items():
                for key, value in st.items():
                    if torch.is_tensor(value):
                        slots[f"{prefix}.{key}.{names[id(p)]}"] = value
                    elif key == "step":
                        steps[prefix] = value
        return weights, slots, steps

    def _load(self, ckpt: checkpoint.Checkpoint) -> None:
        for prefix, net in self._named_modules().items():  # a part added later (GAN) starts fresh
            checkpoint.load_into(net, ckpt, prefix, allow_missing=prefix != "model")
        for prefix, opt in self._optimizers().items():
            params = dict(self._named_modules()[prefix].named_parameters())
            step = (ckpt.state.get("optimizer_steps") or {}).get(prefix, 0)
            load_slots(opt, params, ckpt, prefix + ".", step)
        self.iteration = ckpt.iteration
        self.loss_history = ckpt.state.get("loss_history") or []
        restore_rng(self.gen, self.cpu_gen, ckpt)

    def save(self) -> Path | None:
        """Write a generation (rank 0; the other ranks only join the loss check). Every rank calls it."""
        self._check()  # never save weights that went bad
        if not self.rank.is_main:
            return None
        weights, slots, steps = self._state_tensors()
        state = {
            "model": self.opts.model,
            "options": model_options(self.opts),
            "seed": self.seed,
            "loss_history": self.loss_history[-LOSS_HISTORY:],
            "optimizer_steps": steps,
            "rng": {"device": _bytes_b64(self.gen.get_state()), "cpu": _bytes_b64(self.cpu_gen.get_state())},
            "samplers": {side: s.order for side, s in self.samplers.items()},
            "architecture": self.arch.__dict__,
        }
        return checkpoint.save(self.model_dir, self.iteration, weights, slots, state)

    # ---------------------------------------------------------------- one step

    def _batch(self, side: str) -> torch.Tensor:
        return self.data[side].gather(self.samplers[side].take(self._batch_size(side)))

    def _batch_size(self, side: str) -> int:
        """The global batch (all ranks together), a multiple of the number of ranks."""
        size = (4 if self.quick else self.opts.batch_size) * (self.rank.world if self.quick else 1)
        return max(self.rank.world, size - size % self.rank.world)

    def _local(self, batch):  # noqa: ANN001, ANN202
        """This rank's slice of a global batch."""
        if self.rank.world == 1:
            return batch
        per = batch.target.shape[0] // self.rank.world
        sl = slice(self.rank.rank * per, (self.rank.rank + 1) * per)
        return type(batch)(batch.warped[sl], batch.target[sl], batch.mask[sl], batch.eyes_mouth[sl])

    def step(self) -> StepLosses:
        """One training iteration (DFL: G step, then code-D step, then GAN-D step on the same batch)."""
        opts, res = self.opts, self.res
        if self.quick and self.iteration % 3 == 2 and self._last_batch is not None:
            src, dst = self._last_batch  # Quick96 retrains the previous batch unwarped every 3rd step
            src = type(src)(src.target, src.target, src.mask, src.eyes_mouth)
            dst = type(dst)(dst.target, dst.target, dst.mask, dst.eyes_mouth)
        else:
            src_u8 = self._batch("src")
            if not self.quick and opts.ct_mode != "none" and not opts.pretrain:
                src_u8 = self._recolour(src_u8)
            src = augment(src_u8, self.aug["src"], self.gen)
            dst = augment(self._batch("dst"), self.aug["dst"], self.gen)
            if not self.quick and opts.blur_out_mask:
                src, dst = self._blur_out(src), self._blur_out(dst)
            src, dst = self._local(src), self._local(dst)
            self._last_batch = (src, dst)
        masked = self.quick or opts.masked_training or self.face_type not in (FaceType.WHOLE_FACE, FaceType.HEAD)
        em_src = src.eyes_mouth if (opts.eyes_mouth_prio and not self.quick) else None
        em_dst = dst.eyes_mouth if (opts.eyes_mouth_prio and not self.quick) else None
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            out = self._forward(src.warped, dst.warped)
        pred = {k: v.float() for k, v in out.items()}
        src_loss = L.reconstruction_loss(src.target, pred["pred_src"], src.mask, pred["pred_src_mask"], res,
                                         masked=masked, eyes_mouth=em_src)  # fmt: skip
        dst_loss = L.reconstruction_loss(dst.target, pred["pred_dst"], dst.mask, pred["pred_dst_mask"], res,
                                         masked=masked, eyes_mouth=em_dst)  # fmt: skip
        # DFL differentiates the sum over the batch; DDP averages over ranks, hence x world
        total = (src_loss + dst_loss).sum() * self.rank.world
        if not self.quick and not opts.pretrain:
            total = total + self._extra_losses(src, dst, pred)
        self._backward_and_update(total, self.optimizer)
        if not opts.pretrain:
            self._discriminator_steps(src, pred)
        if self.scaler is not None:
            self.scaler.update()
        self._updating = False
        self.iteration += 1
        losses = StepLosses(src_loss.detach().mean(), dst_loss.detach().mean())
        self._pending += torch.stack([losses.src, losses.dst])
        self._bad |= ~torch.isfinite(total.detach())
        self._count += 1
        return losses

    def _backward_and_update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward, the update (through the fp16 loss scaler if there is one), then the gradients
        are freed at once rather than kept through the next forward pass. (The discriminators'
        gradients from the generator's loss are dropped first, as before.)"""
        optimizer.zero_grad(set_to_none=True)
        if self.update_in_backward and optimizer is self.optimizer:
            self._updating = True  # the hooks update the weights during the backward pass
            loss.backward()
        elif self.scaler is None:
            loss.backward()
            self._updating = True
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self._updating = True
            self.scaler.step(optimizer)  # skipped when a gradient overflowed; the scale then drops
        optimizer.zero_grad(set_to_none=True)

    def _guarded_step(self) -> None:
        """`step()`, where a missing low-precision kernel falls back to fp32 with one warning, and
        running out of memory keeps what is good and ends in one line (a UserError)."""
        try:
            self.step()
        except Exception as exc:  # noqa: BLE001 - sorted below; anything else is re-raised as it is
            if is_out_of_memory(exc):
                raise self._out_of_memory() from None
            if self.amp_dtype is None or self._updating or not _missing_kernel(exc):
                raise
            log.warning("%s has no %s kernel for an operation of this model (%s): training goes on in fp32 "
                        "(--precision fp32 skips this try)", self.device, str(self.amp_dtype).split(".")[-1],
                        str(exc).splitlines()[0][:120])  # fmt: skip
            self.amp_dtype, self.scaler, self._last_batch = None, None, None
            self.step()

    def _out_of_memory(self) -> UserError:
        from facelab.training.memory import after_out_of_memory

        self._last_batch = None
        save = self.save if not self._updating and self.rank.is_main else None  # a half-done update is never saved
        return after_out_of_memory(self.device, self._batch_size("src"), self.res, self.iteration, self.model_dir, save,
                                   list(self._optimizers().values()))  # fmt: skip

    def _recolour(self, src_u8: torch.Tensor) -> torch.Tensor:
        """ct_mode: each src face recoloured toward a random dst face (DFL's sample-level ct)."""
        from facelab.nn.color import color_transfer

        ref_idx = torch.randint(0, self.data["dst"].cache.images.shape[0], (src_u8.shape[0],), generator=self.cpu_gen)
        ref = self.data["dst"].gather(ref_idx)[:, :4].float() / 255
        src = src_u8[:, :4].float() / 255
        bgr = color_transfer(self.opts.ct_mode, src[:, :3], ref[:, :3], self.gen, src[:, 3:4], ref[:, 3:4])
        return torch.cat([(bgr * 255).round().clamp(0, 255).to(torch.uint8), src_u8[:, 3:]], 1)

    def _blur_out(self, batch):  # noqa: ANN001, ANN202
        """blur_out_mask: the target's background becomes a background-only blur (sigma res/128)."""
        outside = 1 - batch.mask
        sigma = max(self.res / 128, 0.5)
        bg = L.gaussian_blur(batch.target * outside, sigma) / L.gaussian_blur(outside, sigma).clamp_min(1e-4)
        target = batch.target * batch.mask + bg.clamp(0, 1) * outside
        return type(batch)(batch.warped, target, batch.mask, batch.eyes_mouth)

    def _extra_losses(self, src, dst, pred: dict) -> torch.Tensor:  # noqa: ANN001
        opts, res = self.opts, self.res
        extra = torch.zeros((), device=self.device)
        if opts.face_style_power > 0 or opts.bg_style_power > 0:
            swap, swap_mask = self.model.decode_src(self.model.swap_code(dst.warped))
            if opts.face_style_power > 0:
                a = swap * swap_mask.detach()
                b = (pred["pred_dst"] * pred["pred_dst_mask"]).detach()
                extra = extra + 10000 * opts.face_style_power / 100 * L.style_loss(a, b, max(1, res // 8)).sum()
            if opts.bg_style_power > 0:  # outside the dst mask (DFL used the src mask here by mistake)
                outside = 1 - L.mask_blur(dst.mask, res)
                a, b = swap * outside, dst.target * outside
                extra = extra + 10 * opts.bg_style_power / 100 * (L.structure_loss(b, a, res) / 10 + (a - b).square().mean(dim=(1, 2, 3))).sum()
        if self.code_d is not None:
            extra = extra + opts.true_face_power * L.bce_with_logits(self.code_d(pred["code_src"]), 1.0).sum()
        if self.gan_d is not None:
            m = L.mask_blur(src.mask, res)
            centre, full = self.gan_d(pred["pred_src"] * m)
            extra = extra + opts.gan_power * (L.bce_with_logits(centre, 1.0) + L.bce_with_logits(full, 1.0)).sum()
            extra = extra + (1e-6 * L.total_variation_mse(pred["pred_src"]) + 0.02 * ((pred["pred_src"] - src.target) * (1 - m)).square().mean(dim=(1, 2, 3))).sum()
        return extra

    def _discriminator_steps(self, src, pred: dict) -> None:  # noqa: ANN001
        if self.code_d is not None:
            d = self.code_d
            loss = 0.5 * (L.bce_with_logits(d(pred["code_dst"].detach()), 1.0) + L.bce_with_logits(d(pred["code_src"].detach()), 0.0)).sum()
            self._backward_and_update(loss, self.d_optimizers["code_d"])
        if self.gan_d is not None:
            m = L.mask_blur(src.mask, self.res)
            rc, rf = self.gan_d(src.target * m)
            fc, ff = self.gan_d(pred["pred_src"].detach() * m)
            loss = 0.5 * (L.bce_with_logits(rc, 1.0) + L.bce_with_logits(fc, 0.0) + L.bce_with_logits(rf, 1.0) + L.bce_with_logits(ff, 0.0)).sum()
            self._backward_and_update(loss, self.d_optimizers["gan_d"])

    # ---------------------------------------------------------------- checks and the loop

    def _check(self) -> tuple[float, float] | None:
        """Bring the pending losses to the host (the one sync); roll back on NaN/Inf or a spike."""
        if self._count == 0:
            return None
        all_reduce_(self._pending)
        bad_t = all_reduce_(self._bad.to(torch.int32), "max")
        means = (self._pending / (self._count * self.rank.world)).tolist()
        bad = bool(bad_t)
        self._pending.zero_()
        self._bad.zero_()
        self._count = 0
        recent = [sum(x) for x in self.loss_history[-2000:]]
        baseline = float(np.median(recent)) if len(recent) >= 100 else None
        if bad or not all(math.isfinite(v) for v in means) or (baseline and sum(means) > SPIKE_FACTOR * baseline):
            why = "the loss became NaN/Inf" if bad or not all(math.isfinite(v) for v in means) else (
                f"the loss jumped to {sum(means):.3f} from about {baseline:.3f}")  # fmt: skip
            self._rollback(why)
            return None
        self.loss_history.append([round(means[0], 6), round(means[1], 6)])
        return means[0], means[1]

    def _rollback(self, why: str) -> None:
        self._rollbacks += 1
        ckpt = checkpoint.load_latest(self.model_dir, map_location=self.device)
        if ckpt is None or self._rollbacks > MAX_ROLLBACKS:
            raise UserError(f"training collapsed ({why}) at iteration {self.iteration} and rolling back did not help: "
                            "lower the learning-rate features (GAN, style powers), turn on gradient clipping, or use a backup")  # fmt: skip
        log.warning("%s at iteration %d: rolled back to the last good checkpoint, iteration %d", why, self.iteration, ckpt.iteration)
        self._load(ckpt)
        self._last_batch = None

    def preview(self, count: int = 4, offset: int = 0) -> np.ndarray:
        """Rows of [src, src->src, dst, dst->dst, dst->src] for `count` faces from `offset`, BGR uint8."""
        pick = lambda side: (torch.arange(count) + offset) % len(self.data[side].cache)  # noqa: E731
        return self._preview_rows(self.data["src"].gather(pick("src")), self.data["dst"].gather(pick("dst")))

    def timelapse(self) -> np.ndarray:
        """The timelapse faces' rows, as `preview` draws them (the faces are chosen on first use)."""
        tl = self._timelapse or self._choose_timelapse()
        return self._preview_rows(tl["src"].data.gather(tl["src"].index), tl["dst"].data.gather(tl["dst"].index))

    def _choose_timelapse(self) -> dict:
        from facelab.training import timelapse

        mask = "train" if self.opts.mask_type == "auto" else self.opts.mask_type
        folders = {"src": self.opts.timelapse_src, "dst": self.opts.timelapse_dst}
        self._timelapse = timelapse.choose_faces(self.model_dir, self.data, folders, self.res, self.face_type, mask, self.device)
        return self._timelapse

    def _preview_rows(self, src_u8: torch.Tensor, dst_u8: torch.Tensor) -> np.ndarray:
        from facelab.training.preview import preview_grid

        plain = AugmentSettings(random_warp=False, rotation_deg=0, scale=0, shift=0)
        gen = torch.Generator(device=self.device)  # its own: previews must not move the training RNG
        self.model.eval()
        try:
            with torch.no_grad():
                src = augment(src_u8, plain, gen)
                dst = augment(dst_u8, plain, gen)
                n = min(len(src.target), len(dst.target))
                out = self.model(src.target[:n], dst.target[:n])
                swap, _, _ = self.model.swap(dst.target[:n])
            return preview_grid([src.target[:n], out["pred_src"], dst.target[:n], out["pred_dst"], swap])
        finally:
            self.model.train()

    def run(self, stop: threading.Event, console: Callable[[str], None], control: TrainingControl | None = None) -> dict:
        """Train until the target iteration, `stop` or the window's quit; autosave, backups,
        previews; honour the window's requests between steps. Returns counts."""
        opts = self.opts
        autosave_s = opts.autosave_minutes * 60
        backup_s = opts.autobackup_hour * 3600
        history_every = 10 * max(1, self.res // 64)
        started = last_save = last_backup = time.monotonic()
        first_iter = self.iteration
        window_start, window_iter = time.perf_counter(), self.iteration
        self.model.train()
        main, many = self.rank.is_main, self.rank.world > 1
        while not (opts.target_iter and self.iteration >= opts.target_iter):
            if not many and stop.is_set():
                break
            self._guarded_step()
            means = None
            checking = self.iteration == 1 or self.iteration % CHECK_EVERY == 0
            if checking:
                means = self._check()
                if means is not None and main:
                    ms = (time.perf_counter() - window_start) * 1000 / max(1, self.iteration - window_iter)
                    console(f"[{time.strftime('%H:%M:%S')}][#{self.iteration:06d}][{ms:04.0f}ms][{means[0]:.4f}][{means[1]:.4f}]")
                    window_start, window_iter = time.perf_counter(), self.iteration
            if control is not None:
                self._serve(control, means if self.iteration % CHECK_EVERY == 0 or self.iteration == 1 else None)
                if control.quit_requested:
                    break
            if main and opts.write_preview_history and self.iteration % history_every == 0:
                image = self.preview()
                self._previews.submit(self._write_image, image, self.model_dir / "history" / f"{self.iteration:07d}.jpg")
            now = time.monotonic()
            due = self.iteration == 1 or now - last_save >= autosave_s
            if many:  # ranks save together, when rank 0 says so, only at checks (deterministic points)
                due = checking and agree(due, self.device)
            if due:
                generation = self.save()
                last_save = now
                self._timelapse_image()
                if main and backup_s and now - last_backup >= backup_s:
                    checkpoint.backup(self.model_dir, generation)
                    last_backup = now
        generation = self.save()
        if not main:
            return {"iterations": self.iteration - first_iter, "iteration": self.iteration}
        self._timelapse_image()
        final = self.preview(offset=control.sample_offset if control else 0)
        self._previews.submit(self._write_image, final, self.model_dir / "preview.jpg", 95)
        self._previews.shutdown(wait=True)
        if control is not None:
            control.publish(preview=final, iteration=self.iteration, loss_history=list(self.loss_history))
        return {"iterations": self.iteration - first_iter, "iteration": self.iteration, "seconds": time.monotonic() - started,
                "saved": str(generation)}  # fmt: skip

    def _serve(self, control: TrainingControl, means: tuple | None) -> None:
        """The window's requests, between two steps."""
        if control.take("save_requested"):
            log.info("saved: %s", self.save().name)
        if control.take("backup_requested"):
            log.info("backup: %s", checkpoint.backup(self.model_dir, self.save()))
        if control.take("refresh_requested") or (means is not None and self.iteration % (CHECK_EVERY * 20) == 0):
            control.publish(preview=self.preview(offset=control.sample_offset))
        if means is not None:
            control.publish(iteration=self.iteration, loss_history=list(self.loss_history))

    def _timelapse_image(self) -> None:
        """One timelapse image of the iteration just saved, written off the training thread."""
        from facelab.training.timelapse import image_path

        if not (self.rank.is_main and self.opts.timelapse) or self._timelapse_at == self.iteration:
            return
        self._timelapse_at = self.iteration
        image, path = self.timelapse(), image_path(self.model_dir, self.iteration)
        self._previews.submit(self._write_image, image, path)

    def _write_image(self, image: np.ndarray, path: Path, quality: int = 90) -> None:
        from facelab.io.frames import write_image_atomic

        write_image_atomic(path, image, jpeg_quality=quality)
