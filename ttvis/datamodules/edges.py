"""Streaming weighted edges on the training device (docs/design.md §4.3).

No per-sample ``__getitem__``: each batch is ``B`` edge indices drawn at once with
``torch.searchsorted`` on the cumulative weights, then rows gathered from a representation
tensor that already lives on the device.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import numpy as np
import torch
from torch import Tensor

from ttvis.boundary import FlipSegments
from ttvis.complex import EdgeSet
from ttvis.run import TrainingRun


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
        anchor_vertex: optional ``[N]`` int64 vertex whose features each vertex's temporal
            anchor is (``-1``: none); each batch then also carries ``anchor_x``, those
            features, to be encoded by the visualizer. With ``dedup`` only the ``A`` vertices
            that have an anchor carry one: ``anchor_x [A, D]`` and ``anchor_rows [A]``, their
            rows of ``x`` (the others' encodings would be weighed 0). Without it every row
            carries one (``[U, D]``, a vertex's own features where it has none), so the host
            never waits for a count.
        segments: optional segments across the subject's decision boundary; each batch then
            also carries ``boundary_x``: points on ``round(segment_fraction * B)`` of them drawn
            uniformly, at a mixing weight within ``segment_width`` of the flip.
        segment_fraction: boundary-segment points per edge of a batch.
        segment_width: how far from the flip, as a share of the segment, the points may lie.
        dedup: pass each distinct vertex of a batch once (with its count) instead of once per
            edge end: fewer rows through the network when batches revisit vertices, at the
            price of a ``torch.unique`` whose output size the host waits for. None: on CPU
            only (on an accelerator the wait costs more than the rows).

    Yields:
        ``{"x": [U, D], "vertex": [U], "head_pos": [B], "tail_pos": [B], "counts": [U],
        **vertex_data}`` (``vertex``: each row's vertex index)
        (and ``"anchor_x"``, ``"anchor_rows"`` with anchor vertices, ``"boundary_x": [S, D]`` with
        segments, and their epoch positions ``"boundary_epoch_pos": [S]`` when ``vertex_data``
        has ``"epoch_pos"``): the distinct vertices of the batch's edges once, and where each
        edge's ends sit among them.
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
        anchor_vertex: np.ndarray | Tensor | None = None,
        segments: FlipSegments | None = None,
        segment_fraction: float = 0.0,
        segment_width: float = 0.3,
        dedup: bool | None = None,
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
        self.anchor_vertex: Tensor | None = None
        if anchor_vertex is not None:
            self.anchor_vertex = torch.as_tensor(anchor_vertex, device=device)
        self.segments: tuple[Tensor, Tensor, Tensor] | None = None
        if segments is not None and len(segments) > 0 and segment_fraction > 0:
            self.segments = (
                torch.as_tensor(segments.first, device=device),
                torch.as_tensor(segments.second, device=device),
                torch.as_tensor(segments.flip, device=device, dtype=reps.dtype)[:, None],
            )
        self.segment_fraction = float(segment_fraction)
        self.segment_width = float(segment_width)
        self.dedup = device.type == "cpu" if dedup is None else bool(dedup)
        if self.anchor_vertex is not None and not self.dedup:  # every row carries an anchor
            own = torch.arange(reps.shape[0], device=device)
            self.anchor_vertex = torch.where(self.anchor_vertex >= 0, self.anchor_vertex, own)

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
            if self.dedup:
                vertices, inverse, counts = torch.unique(
                    ends, return_inverse=True, return_counts=True
                )
            else:  # every end its own row: no output whose size the host must wait for
                vertices, inverse = ends, torch.arange(ends.shape[0], device=device)
                counts = torch.ones_like(ends)
            batch = {
                "x": self.reps[vertices],
                "vertex": vertices,
                "head_pos": inverse[:size],
                "tail_pos": inverse[size:],
                "counts": counts,
            }
            for name, values in self.vertex_data.items():
                batch[name] = values[vertices]
            if self.anchor_vertex is not None:
                anchor = self.anchor_vertex[vertices]
                if self.dedup:
                    batch["anchor_rows"] = torch.nonzero(anchor >= 0).squeeze(1)
                    anchor = anchor[batch["anchor_rows"]]
                batch["anchor_x"] = self.reps[anchor]
            if self.segments is not None:
                batch["boundary_x"], first = self._segment_points(size, generator)
                if "epoch_pos" in self.vertex_data:  # a segment lies within one epoch
                    batch["boundary_epoch_pos"] = self.vertex_data["epoch_pos"][first]
            yield batch

    def _segment_points(self, n_edges: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``([S, D], [S])``: points near the flips of ``S = round(segment_fraction * n_edges)``
        uniformly drawn segments, and each segment's first vertex."""
        first, second, flip = self.segments
        device = self.reps.device
        n = max(1, round(self.segment_fraction * n_edges))
        pick = torch.randint(0, first.shape[0], (n,), device=device, generator=generator)
        offset = torch.rand(n, 1, device=device, generator=generator, dtype=flip.dtype)
        lam = (flip[pick] + (2 * offset - 1) * self.segment_width).clamp(0.0, 1.0)
        first, second = first[pick], second[pick]
        return lam * self.reps[first] + (1 - lam) * self.reps[second], first


class EdgeDataModule(L.LightningDataModule):
    """What DVI's and TimeVis's datamodules share: the vertex tensor, its normalisation and the
    per-process :class:`EdgeStream`. Subclasses build the complex in :meth:`build` (filling
    ``self._reps`` ``[V, D]`` float32) and say what to stream in :meth:`stream_spec`.

    Args:
        run: the validated training run.
        n_neighbors: k of the spatial k-NN graph; the run needs more training points than this.
        batch_size: edges per optimizer step, over all processes (each of N processes draws
            ``ceil(batch_size / N)``).
        seed: seeds the k-NN and the edge draws.
        max_draws_per_epoch: edge draws per visualizer epoch at most, per subject epoch in the
            complex (None: no cap; see :meth:`capped_draws`).
    """

    def __init__(
        self,
        run: TrainingRun,
        n_neighbors: int,
        batch_size: int,
        seed: int,
        max_draws_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        run.require_training_points(n_neighbors)
        self.run = run
        self.n_neighbors = n_neighbors
        self.batch_size = batch_size
        self.seed = seed
        self.max_draws_per_epoch = max_draws_per_epoch
        self._reps: np.ndarray | None = None
        self._stream: EdgeStream | None = None

    def build(self) -> None:
        """Build the complex on the CPU (idempotent)."""
        raise NotImplementedError

    def stream_spec(self) -> tuple[EdgeSet, int, int, dict[str, Tensor]]:
        """``(edges, draws per visualizer epoch, seed, per-vertex data)`` for the stream."""
        raise NotImplementedError

    def capped_draws(self, n_draws: int, n_subject_epochs: int = 1) -> int:
        """Edge draws per visualizer epoch: ``n_draws`` (from the edge weights, proportional
        to the number of vertices), at most ``max_draws_per_epoch`` per subject epoch in the
        complex. A large run then takes a fixed number of optimizer steps per visualizer epoch
        instead of a number that grows with its size."""
        if self.max_draws_per_epoch is None:
            return n_draws
        return min(n_draws, self.max_draws_per_epoch * n_subject_epochs)

    def anchor_vertices(self) -> np.ndarray | None:
        """``[V']`` each streamed vertex's anchor vertex (``-1``: none; see :class:`EdgeStream`),
        or None: no anchor features in the batches (the default)."""
        return None

    def segment_spec(self) -> tuple[FlipSegments | None, float, float]:
        """``(segments, fraction, width)`` of the boundary-segment points each batch carries
        (see :class:`EdgeStream`); none by default."""
        return None, 0.0, 0.0

    def stream_vertices(self) -> np.ndarray:
        """``[V', D]`` float32 features of every vertex the edges index: the training vertices
        (:attr:`train_reps`), followed by any extra vertices a subclass adds."""
        return self.train_reps

    @property
    def train_reps(self) -> np.ndarray:
        """``[V, D]`` float32 representations of the complex's vertices, in vertex order."""
        self.build()
        return self._reps

    @staticmethod
    def normalisation_of(reps: np.ndarray) -> tuple[Tensor, float]:
        """``(shift [D], scale)`` of ``reps [M, D]``: per-dimension mean and root mean
        per-dimension variance."""
        shift = reps.mean(axis=0, dtype=np.float64)
        scale = float(np.sqrt(reps.var(axis=0, dtype=np.float64).mean()))
        return torch.as_tensor(shift, dtype=torch.float32), scale

    def input_normalisation(self) -> tuple[Tensor, float | Tensor]:
        """``(shift [D], scale)``: the visualizer's input normalisation, from the vertices'
        representations (:meth:`normalisation_of`)."""
        return self.normalisation_of(self.train_reps)

    def setup(self, stage: str) -> None:
        self.build()
        if self._stream is not None:
            return
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        world_size = trainer.world_size if trainer is not None else 1
        edges, n_edges, seed, vertex_data = self.stream_spec()
        segments, fraction, width = self.segment_spec()
        self._stream = EdgeStream(
            torch.as_tensor(self.stream_vertices(), device=device),
            edges,
            n_edges=n_edges,
            # N processes take the optimizer steps one would, each on 1/N of the step's edges
            # (their gradients are averaged), so the fit is the same optimisation, N times as
            # fast: not N times fewer steps of the same size.
            batch_size=math.ceil(self.batch_size / world_size),
            seed=seed,
            rank=trainer.global_rank if trainer is not None else 0,
            world_size=world_size,
            vertex_data=vertex_data,
            anchor_vertex=self.anchor_vertices(),
            segments=segments,
            segment_fraction=fraction,
            segment_width=width,
        )

    def train_dataloader(self) -> EdgeStream:
        return self._stream
