"""Training preview images: DFL's grid of [src, src->src, dst, dst->dst, swap] per face."""

from __future__ import annotations

import numpy as np
import torch


def preview_grid(columns: list[torch.Tensor]) -> np.ndarray:
    """Columns of N x 3 x R x R BGR tensors in [0, 1] -> one BGR uint8 image, a row per face."""
    cols = [c.detach().float().clamp(0, 1).cpu() for c in columns]
    rows = [torch.cat([c[i] for c in cols], dim=2) for i in range(len(cols[0]))]
    grid = torch.cat(rows, dim=1)
    return (grid.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
