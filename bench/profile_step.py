"""`bench/train.py --profile`: where one training step's time goes, by op family, from torch.profiler.

Families: conv forward, conv backward, other forward ops (elementwise, resampling, reshapes),
other backward ops, losses (their forward; their backward is in "other backward"), optimiser,
data (sampling and augmentation), copies and layout reorders. Each op's own (exclusive) CPU time
is put in one family, by its name and the scope it ran in; the scopes are added here, around the
trainer's parts, so training itself carries no profiling code.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

from torch.profiler import ProfilerActivity, profile, record_function

SCOPES = {"facelab:data": "data", "facelab:losses": "losses", "facelab:optimiser": "optimiser"}
COPIES = ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone", "aten::to_mkldnn",
          "aten::to_dense", "aten::_mkldnn_reshape", "mkldnn_reorder")  # fmt: skip
FAMILIES = ("conv forward", "conv backward", "other forward ops", "other backward ops", "losses", "optimiser", "data",
            "copies and reorders")  # fmt: skip


def _scoped(fn: Callable, scope: str) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        with record_function(scope):
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def scopes(trainer) -> Iterator[None]:  # noqa: ANN001
    """Name the trainer's parts for the profiler while the block runs."""
    from facelab.training import trainer as module

    saved = (module.augment, module.L.reconstruction_loss, trainer._batch, trainer.optimizer.step, trainer._extra_losses)
    module.augment = _scoped(module.augment, "facelab:data")
    module.L.reconstruction_loss = _scoped(module.L.reconstruction_loss, "facelab:losses")
    trainer._batch = _scoped(trainer._batch, "facelab:data")
    trainer._extra_losses = _scoped(trainer._extra_losses, "facelab:losses")
    trainer.optimizer.step = _scoped(trainer.optimizer.step, "facelab:optimiser")
    try:
        yield
    finally:
        module.augment, module.L.reconstruction_loss = saved[0], saved[1]
        del trainer._batch, trainer.optimizer.step, trainer._extra_losses  # back to the class's methods


def family(event) -> str | None:  # noqa: ANN001 - torch's FunctionEvent
    """The family of one profiled op (None: a scope or wrapper of its own, counted through its ops)."""
    name = event.name
    if name.startswith(("facelab:", "autograd::engine", "ProfilerStep")):
        return None
    backward = "backward" in name.lower()
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in SCOPES:
            return SCOPES[parent.name]
        if parent.name.startswith("autograd::engine") or "Backward" in parent.name:
            backward = True
        parent = parent.cpu_parent
    if any(name.startswith(c) for c in COPIES) or "reorder" in name:
        return "copies and reorders"
    if "convolution" in name or "conv2d" in name or "conv_transpose" in name:
        return "conv backward" if backward else "conv forward"
    return "other backward ops" if backward else "other forward ops"


def profile_steps(trainer, steps: int = 3) -> dict:  # noqa: ANN001
    """ms per step by family (and each family's share) over `steps` training steps."""
    trainer.step()  # warm
    with scopes(trainer), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step()
    totals = dict.fromkeys(FAMILIES, 0.0)
    for event in prof.events():
        fam = family(event)
        if fam is not None:
            totals[fam] += event.self_cpu_time_total / 1000 / steps  # us -> ms per step
    whole = sum(totals.values()) or 1.0
    return {"ms_per_step_profiled": round(whole, 1),
            "by_family_ms": {k: round(v, 1) for k, v in totals.items()},
            "by_family_share": {k: round(v / whole, 3) for k, v in totals.items()}}  # fmt: skip
