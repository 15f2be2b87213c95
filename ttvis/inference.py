"""Batched inference without gradients: the one loop every reader of a network uses.

Arrays may be memory-mapped and larger than memory; each batch is copied, converted and moved
to the device on its own, so only one batch and the outputs are ever resident.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: np.ndarray | torch.Tensor,
    batch_size: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``fn`` over the rows of ``x`` in batches, under ``torch.no_grad()``.

    Args:
        fn: a network call, ``[B, ...] -> [B, ...]``.
        x: ``[M, ...]`` array (possibly memory-mapped) or tensor, ``M >= 1``.
        batch_size: rows per call.
        device: where each batch goes (None: where it is).
        dtype: each batch's dtype.

    Returns:
        The outputs concatenated along rows, ``[M, ...]``, where ``fn`` put them.
    """
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = x[start : start + batch_size]
            if not isinstance(chunk, torch.Tensor):
                chunk = torch.from_numpy(np.array(chunk, dtype=np.float32))
            out.append(fn(chunk.to(device=device, dtype=dtype)))
    return torch.cat(out)
