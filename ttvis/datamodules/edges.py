"""Streaming weighted edges on the training device (DESIGN.md §4.3).

No per-sample ``__getitem__``: each batch is ``B`` edge indices drawn at once with
``torch.searchsorted`` on the cumulative weights, then rows gathered from a representation
tensor that already lives on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ttvis.complex import EdgeSet


class EdgeStream:
    """An iterable of edge batches; one full iteration is one visualizer epoch.

    Each rank of a multi-process run holds its own stream, draws ``ceil(n_edges / world_size)``
    edges from its own seed, and so trains on different edges from the other ranks.

    Args:
        reps: ``[N, D]`` float32 vertex features on the training device.
        edges: the complex; its arrays are copied to ``reps.device`` once.
        n_edges: draws per visualizer epoch over all ranks (``floor(s_n_epochs * sum(p))``).
        batch_size: edges per batch.
        seed: base seed; the stream for rank r, epoch t uses a seed derived from (seed, r, t).
        rank: this process's global rank.
        world_size: number of processes.
        vertex_data: optional per-vertex tensors ``{name: [N, ...]}`` gathered into each batch
            alongside ``x`` (e.g. previous positions for the temporal anchor).

    Yields:
        ``{"x": [U, D], "head_pos": [B], "tail_pos": [B], "counts": [U], **vertex_data}``: the
        distinct vertices of the batch's edges once, and where each edge's ends sit among them.
    """

    def __init__(
        self,
        reps: Tensor,
        edges: EdgeSet,
        n_edges: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        vertex_data: dict[str, Tensor] | None = None,
    ) -> None:
        if len(edges) == 0:
            raise ValueError("the complex has no edges to sample")
        device = reps.device
        self.reps = reps
        self.head = torch.as_tensor(edges.head, device=device)
        self.tail = torch.as_tensor(edges.tail, device=device)
        weight = torch.as_tensor(edges.weight.astype(np.float64), device=device)
        self.cdf = torch.cumsum(weight, 0)
        self.total = float(self.cdf[-1])
        self.batch_size = int(batch_size)
        self.n_local = max(1, math.ceil(n_edges / world_size))
        self.seed, self.rank = seed, rank
        self.epoch = 0
        self.vertex_data = {k: v.to(device) for k, v in (vertex_data or {}).items()}

    def __len__(self) -> int:
        return math.ceil(self.n_local / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        device = self.reps.device
        generator = torch.Generator(device=device)
        generator.manual_seed(hash((self.seed, self.rank, self.epoch)) & 0x7FFF_FFFF_FFFF)
        self.epoch += 1
        remaining = self.n_local
        while remaining > 0:
            size = min(self.batch_size, remaining)
            remaining -= size
            u = torch.rand(size, generator=generator, device=device, dtype=torch.float64)
            picked = torch.searchsorted(self.cdf, u * self.total).clamp_max(self.cdf.shape[0] - 1)
            ends = torch.cat([self.head[picked], self.tail[picked]])
            vertices, inverse, counts = torch.unique(ends, return_inverse=True, return_counts=True)
            batch = {
                "x": self.reps[vertices],
                "head_pos": inverse[:size],
                "tail_pos": inverse[size:],
                "counts": counts,
            }
            for name, values in self.vertex_data.items():
                batch[name] = values[vertices]
            yield batch
