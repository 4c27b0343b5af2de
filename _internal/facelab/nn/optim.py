"""DFL's optimisers (dfl-spec §8.5), with multi-tensor (`_foreach`) updates.

AdaBelief as DFL writes it, no bias correction:
    m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) (g - m)^2;  w -= lr m / (sqrt(s) + 1e-6)
RMSprop as DFL: a = rho a + (1 - rho) g^2;  w -= lr g / (sqrt(a) + 1e-6).

lr_dropout (DFL's "lr_dropout y"): each step keeps each weight's update with probability
`lr_dropout` (0.3) and scales lr by (cos(2 pi step / 500) + 1) / 2. `clipnorm` scales all
gradients together to a global norm of at most that value.
"""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer

EPS = 1e-6  # np.finfo(float32).resolution, as DFL
CHUNK = 1 << 22  # elements per multi-tensor update, so its scratch buffers stay this small (a bigger
# tensor is updated in slices of it: the update is elementwise, the numbers are the same)


def _chunks(tensors: list[torch.Tensor]) -> list[slice]:
    """Consecutive slices of `tensors` of at most CHUNK elements each (a bigger tensor alone)."""
    out, start, size = [], 0, 0
    for i, t in enumerate(tensors):
        if size and size + t.numel() > CHUNK:
            out.append(slice(start, i))
            start, size = i, 0
        size += t.numel()
    if start < len(tensors):
        out.append(slice(start, len(tensors)))
    return out


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill its memory without gaps or overlaps (any order of dimensions)."""
    return t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)


def _flat(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
    """t's elements in memory order as one flat view, if t is dense and laid out as `like`."""
    if t.shape != like.shape or t.stride() != like.stride() or not _dense(t):
        return None
    return t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))


def keep_mask(like: torch.Tensor, keep: float, generator: torch.Generator | None = None,
              out: torch.Tensor | None = None, draws: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Flags shaped as `like`, set with probability `keep` (to 1/65536): a new bool tensor, or
    written into `out` (any dtype: the optimiser takes them as floats, 1 or 0).

    Each random 64-bit number gives four 16-bit uniform draws: a quarter of the random numbers
    `torch.bernoulli` would draw, 4x faster on a CPU, where lr dropout's draws for every weight at
    every step were most of Quick96's optimiser time. `draws`: int64 room for them, kept by the
    caller between steps ((numel + 3) // 4)."""
    if out is None:
        out = torch.empty(like.shape, dtype=torch.bool, device=like.device)
    if keep >= 1.0 or keep <= 0.0:  # (65536 levels do not fit an int16 comparison)
        return out.fill_(keep >= 1.0)
    n = like.numel()
    size = ((n + 3) // 4,)
    if draws is None:
        draws = torch.empty(size, dtype=torch.int64, device=like.device)
    torch.randint(-(2**63), 2**63 - 1, size, dtype=torch.int64, device=like.device, generator=generator, out=draws)
    return torch.lt(draws.view(torch.int16)[:n].view(like.shape), round(keep * 65536) - 32768, out=out)


def _clip_(params: list[torch.Tensor], grads: list[torch.Tensor], clipnorm: float) -> None:
    if clipnorm <= 0 or not grads:
        return
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    scale = torch.clamp(clipnorm / (norm + 1e-7), max=1.0)
    torch._foreach_mul_(grads, scale)


class _DFLOptimizer(Optimizer):
    """What DFL's optimisers share: clipping, the step count, lr cosine and lr dropout. A
    subclass names its state slots (`SLOTS`) and computes the update direction (`_direction`)."""

    SLOTS: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict, generator: torch.Generator | None):  # noqa: ANN001
        super().__init__(params, defaults)
        self.generator = generator
        self._buffers: dict[tuple, torch.Tensor] = {}

    def _lr(self, group: dict, step: int) -> float:
        lr = group["lr"]
        if group["lr_dropout"] < 1.0 and group["lr_cos"]:
            lr *= (math.cos(step * 2 * math.pi / group["lr_cos"]) + 1.0) / 2.0
        return lr

    def _direction(self, group: dict, grads: list[torch.Tensor], slots: list[list[torch.Tensor]],
                   denoms: list[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
        """Update the slots, write the denominators into `denoms` and return the numerators: the
        update is -lr x their ratio."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            _clip_(params, grads, group["clipnorm"])
            slots: list[list[torch.Tensor]] = [[] for _ in self.SLOTS]
            for p in params:
                state = self._next_step(p)
                for k, name in enumerate(self.SLOTS):
                    slots[k].append(state[name])
            lr = self._lr(group, self.state[params[0]]["step"])
            for part in _chunks(params):  # the same numbers as one update over all tensors
                self._apply(group, params[part], grads[part], [slot[part] for slot in slots], lr)

    def _next_step(self, p: torch.Tensor) -> dict:
        """p's state (slots made on its first step) with the step count moved on."""
        state = self.state[p]
        if not state:
            state["step"] = 0
            for name in self.SLOTS:
                state[name] = torch.zeros_like(p)
        state["step"] += 1
        return state

    def _apply(self, group: dict, params: list, grads: list, slots: list[list[torch.Tensor]], lr: float) -> None:
        if len(params) == 1 and params[0].numel() > CHUNK:
            flats = [_flat(t, params[0]) for t in (params[0], grads[0], *(s[0] for s in slots))]
            if all(f is not None for f in flats):  # one huge tensor (a 256 px model's dense layer) in slices
                p, g, *rest = flats
                for a in range(0, p.numel(), CHUNK):
                    sl = slice(a, a + CHUNK)
                    self._apply(group, [p[sl]], [g[sl]], [[f[sl]] for f in rest], lr)
                return
        denoms = self._scratch("denom", grads)
        nums = self._direction(group, grads, slots, denoms)
        keep = group["lr_dropout"]
        if keep < 1.0:  # each weight's update kept with probability lr_dropout
            self._drop_(denoms, keep)
        torch._foreach_addcdiv_(params, nums, denoms, value=-lr)  # one fused pass: w += -lr num / denom

    def _drop_(self, denoms: list[torch.Tensor], keep: float) -> None:
        """Divide each denominator by its weight's keep flag (1 or 0): a dropped weight's update is
        then -lr num / inf = 0, and a kept one is exactly what it was. (Flags of the denominators'
        dtype: a bool mask applied to floats costs 3x more on a CPU.)"""
        n = sum(d.numel() for d in denoms)
        device = denoms[0].device
        flags = self._buffer("keep", n, device, denoms[0].dtype)
        keep_mask(flags, keep, self.generator, out=flags, draws=self._buffer("draws", (n + 3) // 4, device, torch.int64))
        torch._foreach_div_(denoms, self._views(flags, denoms))

    def _buffer(self, kind: str, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """n elements of a flat buffer kept from step to step: a fresh temporary the size of the
        weights at every step costs more than the arithmetic on it (its memory is mapped and
        zeroed page by page), so the update makes none."""
        key = (kind, device, dtype)
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < n:
            buf = self._buffers[key] = torch.empty(n, device=device, dtype=dtype)
        return buf[:n]

    @staticmethod
    def _views(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """Consecutive pieces of `flat`, each laid out in memory as its tensor of `like` (channels-last
        weights get channels-last views: an update between two layouts costs 5x more)."""
        out, at = [], 0
        for t in like:
            piece = flat[at:at + t.numel()]
            out.append(piece.view(t.shape) if t.is_contiguous() or not _dense(t) else piece.as_strided(t.shape, t.stride()))
            at += t.numel()
        return out

    def _scratch(self, kind: str, like: list[torch.Tensor]) -> list[torch.Tensor]:
        """One view per tensor of `like`, shaped as it, into the buffer `kind`."""
        return self._views(self._buffer(kind, sum(t.numel() for t in like), like[0].device, like[0].dtype), like)

    @torch.no_grad()
    def step_now(self, p: torch.Tensor) -> None:
        """Update one parameter from its gradient and free the gradient: called by a hook as soon
        as the backward pass has accumulated it, so that the gradients never all exist at once.
        The same numbers as `step()` (the updates are elementwise), except with clipping, which
        needs every gradient first, and with lr dropout, whose random draws come in another order."""
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        state = self._next_step(p)
        # small slices: this runs inside the backward pass, at its peak (low-memory mode)
        self._apply(group, [p], [p.grad], [[state[name]] for name in self.SLOTS], self._lr(group, state["step"]))
        p.grad = None


class AdaBelief(_DFLOptimizer):
    SLOTS = ("m", "v")

    def __init__(self, params, lr: float = 5e-5, betas=(0.9, 0.999), lr_dropout: float = 1.0, lr_cos: int = 0,  # noqa: ANN001
                 clipnorm: float = 0.0, generator: torch.Generator | None = None):  # fmt: skip
        super().__init__(params, dict(lr=lr, betas=betas, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm), generator)

    def _direction(self, group: dict, grads: list[torch.Tensor], slots: list[list[torch.Tensor]],
                   denoms: list[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
        # fused forms of DFL's rule: fewer passes over the weights' memory (the update is memory-bound)
        ms, vs = slots
        b1, b2 = group["betas"]
        torch._foreach_lerp_(ms, grads, 1 - b1)  # m = b1 m + (1 - b1) g
        for g, m, d in zip(grads, ms, denoms, strict=True):
            torch.sub(g, m, out=d)  # g - m, in the denominators' room until they are needed
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, denoms, denoms, value=1 - b2)  # v = b2 v + (1 - b2) (g - m)^2
        _sqrt_plus_eps(vs, denoms)
        return ms


class RMSprop(_DFLOptimizer):
    SLOTS = ("a",)

    def __init__(self, params, lr: float = 5e-5, rho: float = 0.9, lr_dropout: float = 1.0, lr_cos: int = 0,  # noqa: ANN001
                 clipnorm: float = 0.0, generator: torch.Generator | None = None):  # fmt: skip
        super().__init__(params, dict(lr=lr, rho=rho, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm), generator)

    def _direction(self, group: dict, grads: list[torch.Tensor], slots: list[list[torch.Tensor]],
                   denoms: list[torch.Tensor]) -> list[torch.Tensor]:  # fmt: skip
        (accs,) = slots
        rho = group["rho"]
        torch._foreach_mul_(accs, rho)
        torch._foreach_addcmul_(accs, grads, grads, value=1 - rho)
        _sqrt_plus_eps(accs, denoms)
        return grads


def _sqrt_plus_eps(squares: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    for a, d in zip(squares, out, strict=True):
        torch.sqrt(a, out=d)
    torch._foreach_add_(out, EPS)
