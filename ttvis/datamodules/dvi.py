"""DVI's datamodule: the spatial complex of one subject epoch, streamed as edges (DESIGN.md §4)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from ttvis.complex import EdgeSet, KNNGraph, neighbour_overlap, spatial_complex
from ttvis.datamodules.edges import EdgeDataModule
from ttvis.run import TrainingRun

log = logging.getLogger(__name__)


class DVIDataModule(EdgeDataModule):
    """Builds the complex of ``run``'s subject ``epoch`` and streams its edges.

    Args:
        run: the validated training run.
        epoch: the subject epoch.
        n_neighbors: k of the k-NN graph.
        s_n_epochs: spatial edge draws per visualizer epoch, relative to ``sum(p)``.
        b_n_epochs: boundary edge draws per visualizer epoch (0 disables boundary samples).
        batch_size: edges per batch and process.
        metric: k-NN metric.
        exact_knn_below: training sets smaller than this use exact brute-force k-NN, larger ones
            pynndescent (whose one-off compilation costs ~30 s per process).
        seed: seeds the k-NN and the edge draws.
        prev_knn: the previous subject epoch's k-NN graph, to measure how many neighbours each
            sample keeps (``npr``) for the temporal loss weight.
        prev_positions: ``[N_train * F, 2]`` the training points' positions under the previous
            visualizer; with ``prev_knn`` they become per-vertex anchors (``anchor``,
            ``anchor_weight = npr``) in every batch.
    """

    def __init__(
        self,
        run: TrainingRun,
        epoch: int,
        n_neighbors: int = 15,
        s_n_epochs: float = 5,
        b_n_epochs: float = 0,
        batch_size: int = 1000,
        metric: str = "euclidean",
        exact_knn_below: int = 10000,
        seed: int = 0,
        prev_knn: KNNGraph | None = None,
        prev_positions: np.ndarray | None = None,
    ) -> None:
        if b_n_epochs:
            raise NotImplementedError("boundary complexes (b_n_epochs > 0) are not available yet")
        super().__init__(run, n_neighbors, batch_size, seed)
        self.epoch = epoch
        self.s_n_epochs = s_n_epochs
        self.metric = metric
        self.exact_knn_below = exact_knn_below
        self.prev_knn = prev_knn
        self.prev_positions = prev_positions
        self.knn: KNNGraph | None = None
        self.edges: EdgeSet | None = None
        self.persistence: np.ndarray | None = None

    def build(self) -> None:
        """Build the complex on the CPU (idempotent); fills ``knn``, ``edges``, ``persistence``."""
        if self.edges is not None:
            return
        start = time.perf_counter()
        self._reps = self.run.train_representations(self.epoch)
        self.edges, self.knn = spatial_complex(
            self._reps,
            self.n_neighbors,
            self.s_n_epochs,
            metric=self.metric,
            seed=self.seed,
            exact_below=self.exact_knn_below,
        )
        if self.prev_knn is not None:
            self.persistence = neighbour_overlap(self.prev_knn.indices, self.knn.indices) / float(
                self.n_neighbors
            )
        log.info(
            "epoch %d: complex of %d points, %d edges, %d draws per visualizer epoch (%.1fs)",
            self.epoch,
            self._reps.shape[0],
            len(self.edges),
            self.edges.edges_per_epoch(self.s_n_epochs),
            time.perf_counter() - start,
        )

    @property
    def export_epochs(self) -> list[int]:
        """Subject epochs this datamodule's visualizer exports: just its own."""
        return [self.epoch]

    @property
    def model_epoch(self) -> int:
        """Name of the exported visualizer, ``vismodel/{model_epoch}.pth``."""
        return self.epoch

    @property
    def progress_label(self) -> str:
        """``DVI epoch e (k/K)`` for the progress bar."""
        k = self.run.epochs.index(self.epoch) + 1
        return f"DVI epoch {self.epoch} ({k}/{len(self.run.epochs)})"

    @property
    def mean_persistence(self) -> float:
        """``mean_i(npr_i)``: the share of k-NN kept since the previous epoch (0 without one)."""
        return float(self.persistence.mean()) if self.persistence is not None else 0.0

    def stream_spec(self) -> tuple[EdgeSet, int, int, dict[str, Tensor]]:
        """This epoch's edges, ``s_n_epochs * sum(p)`` draws, and the temporal anchors."""
        vertex_data = {}
        if self.prev_positions is not None and self.persistence is not None:
            vertex_data["anchor"] = torch.as_tensor(self.prev_positions, dtype=torch.float32)
            vertex_data["anchor_weight"] = torch.as_tensor(self.persistence, dtype=torch.float32)
        n_edges = self.edges.edges_per_epoch(self.s_n_epochs)
        return self.edges, n_edges, self.seed * 1_000_003 + self.epoch, vertex_data
