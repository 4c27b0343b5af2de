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
CHUNK = 1 << 22  # elements per multi-tensor update: its temporaries stay this small, not 3x the model
SLICE = 1 << 24  # a single tensor bigger than this is updated in slices (elementwise: the same numbers)


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


def keep_mask(like: torch.Tensor, keep: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool tensor shaped as `like`, True with probability `keep` (to 1/65536).

    Each random 64-bit number gives four 16-bit uniform draws: a quarter of the random numbers
    `torch.bernoulli` would draw, 4x faster on a CPU, where lr dropout's draws for every weight at
    every step were most of Quick96's optimiser time."""
    if keep >= 1.0 or keep <= 0.0:  # (65536 levels do not fit an int16 comparison)
        return torch.full(like.shape, keep >= 1.0, dtype=torch.bool, device=like.device)
    n = like.numel()
    draws = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=like.device, generator=generator)
    return (draws.view(torch.int16)[:n] < round(keep * 65536) - 32768).view(like.shape)


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

    def _lr(self, group: dict, step: int) -> float:
        lr = group["lr"]
        if group["lr_dropout"] < 1.0 and group["lr_cos"]:
            lr *= (math.cos(step * 2 * math.pi / group["lr_cos"]) + 1.0) / 2.0
        return lr

    def _direction(self, group: dict, grads: list[torch.Tensor],
                   slots: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
        """Update the slots; return (numerators, denominators): the update is -lr x their ratio."""
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

    def _apply(self, group: dict, params: list, grads: list, slots: list[list[torch.Tensor]], lr: float,
               slice_size: int = SLICE) -> None:  # fmt: skip
        if len(params) == 1 and params[0].numel() > slice_size and params[0].is_contiguous() and grads[0].is_contiguous():
            flat = lambda t: t.view(-1)  # noqa: E731 - one huge tensor (a 256 px model's dense layer) in slices
            for a in range(0, params[0].numel(), slice_size):
                sl = slice(a, a + slice_size)
                self._apply(group, [flat(params[0])[sl]], [flat(grads[0])[sl]], [[flat(s[0])[sl]] for s in slots], lr)
            return
        num, denom = self._direction(group, grads, slots)
        if group["lr_dropout"] < 1.0:  # each weight's update kept with probability lr_dropout
            num = torch._foreach_mul(num, [keep_mask(n, group["lr_dropout"], self.generator) for n in num])
        torch._foreach_addcdiv_(params, num, denom, value=-lr)  # one fused pass: w += -lr num / denom

    @torch.no_grad()
    def step_now(self, p: torch.Tensor) -> None:
        """Update one parameter from its gradient and free the gradient: called by a hook as soon
        as the backward pass has accumulated it, so that the gradients never all exist at once.
        The same numbers as `step()` (the updates are elementwise), except with clipping, which
        needs every gradient first, and with lr dropout, whose random draws come in another order."""
        group = next(g for g in self.param_groups if any(q is p for q in g["params"]))
        state = self._next_step(p)
        # small slices: this runs inside the backward pass, at its peak (low-memory mode)
        self._apply(group, [p], [p.grad], [[state[name]] for name in self.SLOTS], self._lr(group, state["step"]), CHUNK)
        p.grad = None


class AdaBelief(_DFLOptimizer):
    SLOTS = ("m", "v")

    def __init__(self, params, lr: float = 5e-5, betas=(0.9, 0.999), lr_dropout: float = 1.0, lr_cos: int = 0,  # noqa: ANN001
                 clipnorm: float = 0.0, generator: torch.Generator | None = None):  # fmt: skip
        super().__init__(params, dict(lr=lr, betas=betas, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm), generator)

    def _direction(self, group: dict, grads: list[torch.Tensor],
                   slots: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
        # fused forms of DFL's rule: fewer passes over the weights' memory (the update is memory-bound)
        ms, vs = slots
        b1, b2 = group["betas"]
        torch._foreach_lerp_(ms, grads, 1 - b1)  # m = b1 m + (1 - b1) g
        diff = torch._foreach_sub(grads, ms)
        torch._foreach_mul_(vs, b2)
        torch._foreach_addcmul_(vs, diff, diff, value=1 - b2)  # v = b2 v + (1 - b2) (g - m)^2
        del diff
        denom = torch._foreach_sqrt(vs)
        torch._foreach_add_(denom, EPS)
        return ms, denom


class RMSprop(_DFLOptimizer):
    SLOTS = ("a",)

    def __init__(self, params, lr: float = 5e-5, rho: float = 0.9, lr_dropout: float = 1.0, lr_cos: int = 0,  # noqa: ANN001
                 clipnorm: float = 0.0, generator: torch.Generator | None = None):  # fmt: skip
        super().__init__(params, dict(lr=lr, rho=rho, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm), generator)

    def _direction(self, group: dict, grads: list[torch.Tensor],
                   slots: list[list[torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:  # fmt: skip
        (accs,) = slots
        rho = group["rho"]
        torch._foreach_mul_(accs, rho)
        torch._foreach_addcmul_(accs, grads, grads, value=1 - rho)
        denom = torch._foreach_sqrt(accs)
        torch._foreach_add_(denom, EPS)
        return grads, denom
