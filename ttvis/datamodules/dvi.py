"""DVI's datamodule: one subject epoch's spatial complex, streamed as edges (docs/design.md §4)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from ttvis.boundary import (
    FlipSegments,
    boundary_complex,
    boundary_points,
    flip_segments,
    predicted_classes,
)
from ttvis.complex import (
    EdgeSet,
    KNNGraph,
    combine_edges,
    fuzzy_complex,
    kept_share,
    spatial_complex,
)
from ttvis.datamodules.edges import EdgeDataModule
from ttvis.knn import EXACT_BELOW
from ttvis.layout import umap_layout
from ttvis.modules.losses import umap_ab
from ttvis.run import TrainingRun
from ttvis.subject import SubjectHead

log = logging.getLogger(__name__)


class DVIDataModule(EdgeDataModule):
    """Builds the complex of ``run``'s subject ``epoch`` and streams its edges.

    Args:
        run: the validated training run.
        epoch: the subject epoch.
        n_neighbors: k of the k-NN graph.
        s_n_epochs: spatial edge draws per visualizer epoch, relative to ``sum(p)``.
        b_n_epochs: boundary edge draws per visualizer epoch, relative to ``sum(p_b)``
            (0 disables boundary points).
        boundary_fraction: differently-predicted sample pairs bisected into boundary points,
            as a share of the training points (§4.2).
        boundary_delta: largest normalised top-1/top-2 logit gap of a boundary point.
        boundary_steps: bisection steps per pair.
        batch_size: edges per optimizer step over all processes.
        max_draws_per_epoch: edge draws per visualizer epoch at most, per subject epoch
            (None: no cap; :meth:`EdgeDataModule.capped_draws`).
        metric: k-NN metric.
        exact_knn_below: see :func:`ttvis.knn.knn_backend` (``knn.exact_below``); NN-descent
            starts from ``prev_knn``.
        seed: seeds the k-NN and the edge draws.
        prev_knn: the previous subject epoch's k-NN graph, to measure how many neighbours each
            sample keeps (``kept_share``) for the temporal loss weight.
        prev_positions: ``[N_train * F, 2]`` the training points' positions under the previous
            visualizer; with ``prev_knn`` they become per-vertex anchors (``anchor``,
            ``anchor_weight = kept_share ** anchor_power``) in every batch.
        anchor_power: sharpens the anchors: with a high power only the samples that kept
            nearly all their neighbours are held in place, and the rest move freely.
        boundary_mix_fraction: per edge of a batch, this many points near where the subject's
            prediction flips on a segment between differently-predicted neighbours
            (:func:`ttvis.boundary.flip_segments`) join the reconstruction and prediction
            losses as ``boundary_x``; 0 turns them off (they need ``subject_head``).
        boundary_mix_width: those points lie within this share of the segment of the flip.
        subject_head: the epoch's classifier head; boundary points need it (without one they
            are skipped with a warning).
        lambda_layout: the layout targets' loss weight; above 0 a fit from scratch gets UMAP's
            layout of the training points (:func:`ttvis.layout.umap_layout`) in its batches.
        layout_epochs: umap-learn's optimisation epochs for that layout (None: its default).
        spread, min_dist, repulsion_strength, negative_sample_rate: that layout's UMAP settings
            (the visualizer's own).
        class_weight: how far the complex separates the subject's predicted classes
            (umap-learn's supervised ``target_weight``, :func:`ttvis.complex.fuzzy_complex`);
            0 leaves it unsupervised, and so does a run without a subject head.
    """

    def __init__(
        self,
        run: TrainingRun,
        epoch: int,
        n_neighbors: int = 15,
        s_n_epochs: float = 5,
        b_n_epochs: float = 0,
        boundary_fraction: float = 0.1,
        boundary_delta: float = 0.1,
        boundary_steps: int = 12,
        anchor_power: float = 1.0,
        boundary_mix_fraction: float = 0.0,
        boundary_mix_width: float = 0.3,
        batch_size: int = 1000,
        metric: str = "euclidean",
        exact_knn_below: int = EXACT_BELOW,
        seed: int = 0,
        max_draws_per_epoch: int | None = None,
        prev_knn: KNNGraph | None = None,
        prev_positions: np.ndarray | None = None,
        subject_head: SubjectHead | None = None,
        lambda_layout: float = 0.0,
        layout_epochs: int | None = None,
        spread: float = 1.0,
        min_dist: float = 0.1,
        repulsion_strength: float = 1.0,
        negative_sample_rate: int = 5,
        class_weight: float = 0.0,
    ) -> None:
        super().__init__(run, n_neighbors, batch_size, seed, max_draws_per_epoch)
        self.epoch = epoch
        self.s_n_epochs = s_n_epochs
        self.b_n_epochs = b_n_epochs
        self.boundary_fraction = boundary_fraction
        self.boundary_delta = boundary_delta
        self.boundary_steps = boundary_steps
        self.anchor_power = anchor_power
        self.boundary_mix_fraction = boundary_mix_fraction
        self.boundary_mix_width = boundary_mix_width
        self.segments: FlipSegments | None = None
        self.subject_head = subject_head
        self.metric = metric
        self.exact_knn_below = exact_knn_below
        self.prev_knn = prev_knn
        self.prev_positions = prev_positions
        self.knn: KNNGraph | None = None
        self.edges: EdgeSet | None = None
        self.n_edges = 0
        self.boundary: np.ndarray | None = None  # [M, D] boundary points, vertices N..N+M-1
        self.kept_share: np.ndarray | None = None  # [N] share of k-NN kept since prev_knn
        self.lambda_layout = lambda_layout
        self.layout_epochs = layout_epochs
        self.curve = dict(spread=spread, min_dist=min_dist)
        self.repulsion_strength = repulsion_strength
        self.negative_sample_rate = negative_sample_rate
        self.layout: np.ndarray | None = None  # [N, 2] UMAP layout of the training points
        self.class_weight = class_weight
        self.classes: np.ndarray | None = None  # [N] subject's predicted class per point

    def build(self) -> None:
        """Build the complex on the CPU (idempotent); fills ``knn``, ``edges``, ``n_edges``,
        ``boundary`` and ``kept_share``."""
        if self.edges is not None:
            return
        start = time.perf_counter()
        self._reps = self.run.train_representations(self.epoch)
        if self.class_weight > 0 and self.subject_head is not None:
            self.classes = predicted_classes(self.subject_head, self._reps)[1]
        self.edges, self.knn = spatial_complex(
            self._reps,
            self.n_neighbors,
            self.s_n_epochs,
            metric=self.metric,
            seed=self.seed,
            exact_below=self.exact_knn_below,
            init=self.prev_knn,  # NN-descent starts from the previous epoch's graph
            classes=self.classes,
            class_weight=self.class_weight,
        )
        self.layout = self._layout()
        self.n_edges = self.edges.edges_per_epoch(self.s_n_epochs)
        n_boundary_edges = 0
        if self.b_n_epochs > 0:
            boundary = self._boundary_edges()
            if boundary is not None:
                n_boundary_edges = len(boundary)
                self.edges, self.n_edges = combine_edges(
                    self.edges, boundary, self.s_n_epochs, self.b_n_epochs
                )
        self.n_edges = self.capped_draws(self.n_edges)
        if self.boundary_mix_fraction > 0:
            self.segments = self._flip_segments()
        if self.prev_knn is not None:
            self.kept_share = kept_share(self.prev_knn.indices, self.knn.indices)
        log.info(
            "epoch %d: complex of %d points and %d boundary points, %d edges (%d to boundary "
            "points), %d draws per visualizer epoch, %d segments across the decision boundary "
            "(%.1fs)",
            self.epoch,
            self._reps.shape[0],
            0 if self.boundary is None else self.boundary.shape[0],
            len(self.edges),
            n_boundary_edges,
            self.n_edges,
            0 if self.segments is None else len(self.segments),
            time.perf_counter() - start,
        )

    def _layout(self) -> np.ndarray | None:
        """UMAP's layout of the training points (:func:`ttvis.layout.umap_layout`) on their
        unpruned fuzzy set, for a fit that starts from scratch; None in a warm-started epoch or
        when ``lambda_layout`` is 0.

        Warm epochs have no layout: umap-learn rescales any starting positions to its own box
        before optimising, so a layout started from the previous visualizer's positions is not
        in their frame.
        """
        if self.lambda_layout <= 0 or self.prev_positions is not None:
            return None
        a, b = umap_ab(**self.curve)
        graph, _, _ = fuzzy_complex(  # 0: unpruned, as umap-learn's
            self.knn, 0, seed=self.seed, classes=self.classes, class_weight=self.class_weight
        )
        return umap_layout(
            self._reps,
            graph,
            self.layout_epochs,
            a,
            b,
            repulsion_strength=self.repulsion_strength,
            negative_sample_rate=self.negative_sample_rate,
            seed=self.seed * 1_000_003 + self.epoch,
        )

    def _flip_segments(self) -> FlipSegments | None:
        """The segments for ``boundary_x``, or None, with a warning, when there is no subject
        head or no pair of neighbours is predicted differently."""
        if self.subject_head is None:
            log.warning(
                "epoch %d: boundary_mix_fraction=%g but there is no subject head; no points "
                "near the decision boundary",
                self.epoch,
                self.boundary_mix_fraction,
            )
            return None
        segments = flip_segments(self._reps, self.knn, self.subject_head, self.boundary_steps)
        if len(segments) == 0:
            log.warning(
                "epoch %d: the subject predicts the same class for every pair of neighbours; "
                "no points near the decision boundary",
                self.epoch,
            )
            return None
        return segments

    def segment_spec(self) -> tuple[FlipSegments | None, float, float]:
        """This epoch's segments across the decision boundary and how to sample them."""
        self.build()
        return self.segments, self.boundary_mix_fraction, self.boundary_mix_width

    def _boundary_edges(self) -> EdgeSet | None:
        """Generate this epoch's boundary points (``self.boundary``) and their complex, or
        None, with a warning, when there is no subject head or too few points."""
        if self.subject_head is None:
            log.warning(
                "epoch %d: b_n_epochs=%g but there is no subject head; no boundary points",
                self.epoch,
                self.b_n_epochs,
            )
            return None
        n_pairs = max(1, int(round(self.boundary_fraction * self._reps.shape[0])))
        points = boundary_points(
            self._reps,
            self.knn,
            self.subject_head,
            n_pairs,
            delta=self.boundary_delta,
            n_steps=self.boundary_steps,
            seed=self.seed * 1_000_003 + self.epoch,
        )
        if points.shape[0] <= self.n_neighbors:
            log.warning(
                "epoch %d: only %d boundary points from %d pairs (need more than n_neighbors=%d); "
                "training without them",
                self.epoch,
                points.shape[0],
                n_pairs,
                self.n_neighbors,
            )
            return None
        self.boundary = points
        return boundary_complex(
            self._reps,
            points,
            self.n_neighbors,
            self.b_n_epochs,
            seed=self.seed,
            exact_below=self.exact_knn_below,
        )

    def stream_vertices(self) -> np.ndarray:
        """``[N + M, D]``: the training points, then the boundary points."""
        if self.boundary is None:
            return self.train_reps
        return np.concatenate([self.train_reps, self.boundary])

    @property
    def export_epochs(self) -> list[int]:
        """Subject epochs this datamodule's visualizer exports: just its own."""
        return [self.epoch]

    @property
    def progress_label(self) -> str:
        """``DVI epoch e (k/K)`` for the progress bar."""
        k = self.run.epochs.index(self.epoch) + 1
        return f"DVI epoch {self.epoch} ({k}/{len(self.run.epochs)})"

    @property
    def mean_kept_share(self) -> float:
        """``mean_i(kept_share_i)``: the share of k-NN kept since the previous epoch (0
        without one)."""
        return float(self.kept_share.mean()) if self.kept_share is not None else 0.0

    def stream_spec(self) -> tuple[EdgeSet, int, int, dict[str, Tensor]]:
        """This epoch's edges, ``s_n_epochs * sum(p_s) (+ b_n_epochs * sum(p_b))`` draws, the
        temporal anchors (weight ``kept_share ** anchor_power``; boundary points have none: 0) and,
        with boundary points, ``pred_weight`` (1 for training points, 0 for boundary points)."""
        vertex_data = {}
        n_extra = 0 if self.boundary is None else self.boundary.shape[0]
        if self.layout is not None:
            layout = np.concatenate([self.layout, np.zeros((n_extra, 2), np.float32)])
            weight = np.r_[np.ones(self.layout.shape[0]), np.zeros(n_extra)]
            vertex_data["layout"] = torch.as_tensor(layout, dtype=torch.float32)
            vertex_data["layout_weight"] = torch.as_tensor(weight, dtype=torch.float32)
        if self.prev_positions is not None and self.kept_share is not None:
            anchor = np.concatenate([self.prev_positions, np.zeros((n_extra, 2), np.float32)])
            weight = np.concatenate([self.kept_share**self.anchor_power, np.zeros(n_extra)])
            vertex_data["anchor"] = torch.as_tensor(anchor, dtype=torch.float32)
            vertex_data["anchor_weight"] = torch.as_tensor(weight, dtype=torch.float32)
        if self.boundary is not None:
            # A boundary point's predicted class is a coin flip between two nearly tied ones:
            # as a prediction-loss target it only adds noise (measured: PPR train 0.99 -> 0.96).
            keep = np.r_[np.ones(self._reps.shape[0]), np.zeros(self.boundary.shape[0])]
            vertex_data["pred_weight"] = torch.as_tensor(keep, dtype=torch.float32)
        return self.edges, self.n_edges, self.seed * 1_000_003 + self.epoch, vertex_data
