"""Batched work that fits in memory: a batch that runs out of memory is split and run again.

Merging and extraction run several faces or frames through a model at once. When one such
batch does not fit (a big frame, a small GPU), `Pieces` halves the number of items per call,
says so once, and keeps the smaller size for the rest of the stage; the results are the same,
only slower. Training cannot do this (its batch is part of what it learns), see
`training.memory` for its answer.
"""

from __future__ import annotations

import gc
import logging
import sys
from typing import Any, Callable, Sequence

from facelab.errors import UserError, is_out_of_memory

log = logging.getLogger(__name__)


def free_device_memory() -> None:
    """Let go of what a failed allocation left behind (PyTorch's CUDA cache, Python garbage)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class Pieces:
    """`run(fn, items, join)`: `join([fn(piece) for piece in pieces of items])`, the pieces as large
    as fit (all of `items` at first)."""

    def __init__(self, what: str):
        self.what = what
        self.size: int | None = None  # items per call once one call ran out of memory

    def run(self, fn: Callable[[Any], Any], items: Sequence, join: Callable[[list], Any]) -> Any:
        n = len(items)
        size = min(self.size or n, n) or 1
        out, start = [], 0
        while start < n:
            try:
                out.append(fn(items[start : start + size]))
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled; the rest is re-raised
                if not is_out_of_memory(exc):
                    raise
                free_device_memory()
                if size == 1:
                    first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
                    raise UserError(f"{self.what}: out of memory even with one at a time ({first}): "
                                    "close other programs using the GPU/RAM, or use --device cpu") from None  # fmt: skip
                log.warning("%s: out of memory with %d at once; going on with %d at a time", self.what, size, max(1, size // 2))
                size = self.size = max(1, size // 2)
                continue
            start += size
        return join(out)


def join_lists(parts: list[list]) -> list:
    return [x for part in parts for x in part]
