"""TimeVis's datamodule: one spatio-temporal complex over every (epoch, sample) vertex (§5)."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import Tensor

from ttvis.boundary import FlipSegments, flip_segments, predicted_classes
from ttvis.complex import EdgeSet, combine_edges, edges_from_graph, spatial_complex
from ttvis.datamodules.edges import EdgeDataModule
from ttvis.knn import EXACT_BELOW
from ttvis.run import RunError, TrainingRun
from ttvis.subject import SubjectHead
from ttvis.temporal import (
    KCenterResult,
    VertexLayout,
    data_scale,
    epoch_balance_factors,
    kcenter_select_epochs,
    successor_anchors,
    temporal_complex,
)

log = logging.getLogger(__name__)

SAMPLING = ("none", "kcenter")
NORMALISATION = ("epoch", "shared")


class TimeVisDataModule(EdgeDataModule):
    """Builds the spatio-temporal complex of all of ``run``'s epochs and streams its edges.

    Vertices are ``(epoch, training point)`` pairs laid out epoch by epoch
    (:class:`ttvis.temporal.VertexLayout`); with ``sampling="kcenter"`` only each epoch's
    k-center selection, otherwise every training point of every epoch.

    Args:
        run: the validated training run.
        n_neighbors: k of each epoch's spatial k-NN graph.
        s_n_epochs: spatial edge draws per visualizer epoch, relative to ``sum(p_s)``.
        t_n_epochs: temporal edge draws per visualizer epoch, relative to ``sum(p_t)``.
        t_n_neighbors: ``k_t``, temporal neighbours per vertex (capped at ``#epochs - 1``).
        sampling: ``"none"`` or ``"kcenter"``.
        kcenter_fraction: share of points k-center keeps in the reference epoch; the other
            epochs keep as many as give the same covering radius relative to their data scale
            (:func:`ttvis.temporal.kcenter_select_epochs`).
        kcenter_max_fraction: cap on any epoch's share.
        epoch_balance: exponent ``p``: epoch t's spatial edges are drawn ``(scale_t)^-p`` times
            as often (:func:`ttvis.temporal.epoch_balance_factors`; 0: every epoch alike).
        normalisation: ``"epoch"``: each epoch centred and scaled on its own
            (:meth:`input_normalisation`); ``"shared"``: one normalisation for every epoch.
        anchors: stream temporal anchors: every batch carries each vertex's anchor vertex's
            features (``anchor_x``, the same point in the next epoch that has it) and
            ``anchor_weight``, its share of k-NN kept to the power ``anchor_power``
            (:func:`ttvis.temporal.successor_anchors`). With k-center sampling the two
            epochs' neighbour lists are over different selections, so shares run lower.
        anchor_power: sharpens the anchor weights.
        anchor_min_weight: anchors lighter than this are dropped (weight 0, nothing streamed
            or encoded for them): with a high ``anchor_power`` most vertices of an epoch whose
            neighbourhoods moved weigh almost nothing, yet each anchor costs an encoder pass.
        batch_size: edges per optimizer step over all processes.
        max_draws_per_epoch: edge draws per visualizer epoch at most, per subject epoch
            (None: no cap; :meth:`EdgeDataModule.capped_draws`).
        metric: spatial k-NN metric.
        exact_knn_below: see :func:`ttvis.knn.knn_backend` (``knn.exact_below``).
        seed: seeds the k-NN and the edge draws.
        class_weight: how far each epoch's spatial complex separates that epoch's predicted
            classes (umap-learn's supervised ``target_weight``,
            :func:`ttvis.complex.fuzzy_complex`); 0, or no ``subject_heads``, leaves it
            unsupervised.
        subject_heads: one subject head per epoch of the run (in ``run.epochs`` order), or None.
        boundary_mix_fraction: per edge of a batch, this many points near where an epoch's
            subject flips its prediction between two of that epoch's k-NN neighbours
            (:func:`ttvis.boundary.flip_segments`) join the reconstruction and prediction
            losses as ``boundary_x``, each judged by its epoch's head; 0 turns them off (they
            need ``subject_heads``).
        boundary_mix_width: those points lie within this share of the segment of the flip.
        boundary_steps: bisection steps that locate each flip.
    """

    def __init__(
        self,
        run: TrainingRun,
        n_neighbors: int = 15,
        s_n_epochs: float = 5,
        t_n_epochs: float = 5,
        t_n_neighbors: int = 3,
        sampling: str = "none",
        kcenter_fraction: float = 0.2,
        kcenter_max_fraction: float = 1.0,
        epoch_balance: float = 0.0,
        normalisation: str = "epoch",
        anchors: bool = False,
        anchor_power: float = 1.0,
        anchor_min_weight: float = 0.0,
        batch_size: int = 1000,
        metric: str = "euclidean",
        exact_knn_below: int = EXACT_BELOW,
        seed: int = 0,
        max_draws_per_epoch: int | None = None,
        class_weight: float = 0.0,
        subject_heads: list[SubjectHead] | None = None,
        boundary_mix_fraction: float = 0.0,
        boundary_mix_width: float = 0.3,
        boundary_steps: int = 12,
    ) -> None:
        if sampling not in SAMPLING:
            raise RunError(f"method.sampling={sampling!r}: expected one of {', '.join(SAMPLING)}")
        super().__init__(run, n_neighbors, batch_size, seed, max_draws_per_epoch)
        self.s_n_epochs = s_n_epochs
        self.t_n_epochs = t_n_epochs
        self.t_n_neighbors = t_n_neighbors
        self.sampling = sampling
        self.kcenter_fraction = kcenter_fraction
        self.kcenter_max_fraction = kcenter_max_fraction
        self.epoch_balance = epoch_balance
        if normalisation not in NORMALISATION:
            expected = ", ".join(NORMALISATION)
            raise RunError(f"method.normalisation={normalisation!r}: expected one of {expected}")
        self.normalisation = normalisation
        self.anchors = anchors
        self.anchor_power = anchor_power
        self.anchor_min_weight = anchor_min_weight
        self.metric = metric
        self.exact_knn_below = exact_knn_below
        self.class_weight = class_weight
        self.subject_heads = subject_heads
        self.layout: VertexLayout | None = None
        self.kcenter: list[KCenterResult] | None = None
        self.spatial: EdgeSet | None = None
        self.temporal: EdgeSet | None = None
        self.edges: EdgeSet | None = None
        self.n_edges = 0
        self.anchor: np.ndarray | None = None
        self.anchor_weight: np.ndarray | None = None
        self.boundary_mix_fraction = boundary_mix_fraction
        self.boundary_mix_width = boundary_mix_width
        self.boundary_steps = boundary_steps
        self.segments: FlipSegments | None = None

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        """Build the complex on the CPU (idempotent); fills ``layout``, ``edges``, ``n_edges``."""
        if self.edges is not None:
            return
        start = time.perf_counter()
        self.layout = self._select_vertices()
        self._reps, parts, scales, knn_points = self._epoch_complexes(self.layout)
        if self.epoch_balance:
            parts["weight"] = self._balanced_weights(parts["weight"], scales)
        self.spatial = EdgeSet(**{name: np.concatenate(part) for name, part in parts.items()})
        if self.anchors:
            self._set_temporal_anchors(np.concatenate(knn_points))
        del knn_points
        t_spatial = time.perf_counter()
        graph, _, _ = temporal_complex(
            self._reps,
            self.layout,
            self.spatial.sigmas,
            self.spatial.rhos,
            self.t_n_neighbors,
            self.t_n_epochs,
        )
        self.temporal = edges_from_graph(graph, self.spatial.sigmas, self.spatial.rhos)
        self.edges, self.n_edges = combine_edges(
            self.spatial, self.temporal, self.s_n_epochs, self.t_n_epochs
        )
        self.n_edges = self.capped_draws(self.n_edges, len(self.run.epochs))
        if len(self.edges) == 0 or self.n_edges == 0:
            raise RunError(f"{self.run.content_path}: the spatio-temporal complex has no edges")
        self._log_complex(t_spatial - start, time.perf_counter() - t_spatial)

    def _select_vertices(self) -> VertexLayout:
        """The vertex layout: every training point of every epoch, or with
        ``sampling="kcenter"`` each epoch's k-center selection (kept in ``kcenter``, logged)."""
        run, n_epochs = self.run, len(self.run.epochs)
        n_points = run.train_points.size
        if self.sampling != "kcenter":
            return VertexLayout.full(n_epochs, n_points)
        self.kcenter = kcenter_select_epochs(
            lambda t: run.train_representations(run.epochs[t]),
            n_epochs,
            fraction=self.kcenter_fraction,
            min_points=self.n_neighbors + 1,
            max_fraction=self.kcenter_max_fraction,
        )
        for epoch, r in zip(run.epochs, self.kcenter, strict=True):
            log.info(
                "epoch %d: k-center kept %d of %d points, covering radius %.4g "
                "(%.3f of the data scale)",
                epoch,
                r.selected.size,
                n_points,
                r.radius,
                r.relative_radius,
            )
        return VertexLayout.from_selections([r.selected for r in self.kcenter], n_points)

    def _epoch_complexes(
        self, layout: VertexLayout
    ) -> tuple[np.ndarray, dict[str, list[np.ndarray]], list[float], list[np.ndarray]]:
        """Each epoch's spatial complex over its vertices, epoch by epoch.

        Returns:
            ``(reps, parts, scales, knn_points)``: ``reps [V, D]`` every vertex's
            representation; ``parts``, per :class:`EdgeSet` field, one array per epoch (heads
            and tails as vertex indices); each epoch's :func:`data_scale`; each epoch's k-NN as
            point indices, comparable across epochs.
        """
        run = self.run
        reps = np.empty((layout.n_vertices, run.shape.dim), dtype=np.float32)
        parts: dict[str, list[np.ndarray]] = {
            name: [] for name in ("head", "tail", "weight", "sigmas", "rhos")
        }
        scales, knn_points, segments = [], [], []
        mix_boundary = self._wants_boundary_points()
        for t, epoch in enumerate(run.epochs):
            rows = layout.epoch_slice(t)
            x = run.train_representations(epoch)[layout.point[rows]]
            reps[rows] = x
            classes = None
            if self.class_weight > 0 and self.subject_heads is not None:
                classes = predicted_classes(self.subject_heads[t], x)[1]
            edges, knn = spatial_complex(
                x,
                self.n_neighbors,
                self.s_n_epochs,
                metric=self.metric,
                seed=self.seed,
                exact_below=self.exact_knn_below,
                classes=classes,
                class_weight=self.class_weight,
            )
            knn_points.append(layout.point[rows][knn.indices])
            if mix_boundary:  # as vertex indices: a segment stays within its epoch
                found = flip_segments(x, knn, self.subject_heads[t], self.boundary_steps)
                segments.append(
                    FlipSegments(found.first + rows.start, found.second + rows.start, found.flip)
                )
            parts["head"].append(edges.head + rows.start)
            parts["tail"].append(edges.tail + rows.start)
            parts["weight"].append(edges.weight)
            scales.append(data_scale(x))
            parts["sigmas"].append(edges.sigmas)
            parts["rhos"].append(edges.rhos)
        if mix_boundary:
            self.segments = self._joined_segments(segments)
        return reps, parts, scales, knn_points

    def _wants_boundary_points(self) -> bool:
        """Whether to find each epoch's flips: ``boundary_mix_fraction`` > 0 and subject heads
        to find them with (a warning when the heads are missing)."""
        if self.boundary_mix_fraction > 0 and self.subject_heads is None:
            log.warning(
                "boundary_mix_fraction=%g but there are no subject heads; no points near the "
                "decision boundaries",
                self.boundary_mix_fraction,
            )
        return self.boundary_mix_fraction > 0 and self.subject_heads is not None

    def _joined_segments(self, segments: list[FlipSegments]) -> FlipSegments:
        """Every epoch's segments in one :class:`FlipSegments` (a warning when there are none)."""
        joined = FlipSegments(
            *(
                np.concatenate([getattr(g, f) for g in segments])
                for f in ("first", "second", "flip")
            )
        )
        if len(joined) == 0:
            log.warning(
                "boundary_mix_fraction=%g but no epoch's subject predicts two neighbours "
                "differently; no points near the decision boundaries",
                self.boundary_mix_fraction,
            )
        return joined

    def _balanced_weights(self, weights: list[np.ndarray], scales: list[float]) -> list[np.ndarray]:
        """Each epoch's spatial edge weights scaled by its
        :func:`~ttvis.temporal.epoch_balance_factors` factor (``epoch_balance``), logged."""
        factors = epoch_balance_factors(
            np.array(scales),
            np.array([w.sum(dtype=np.float64) for w in weights]),
            self.epoch_balance,
        )
        weights = [(w * f).astype(np.float32) for w, f in zip(weights, factors, strict=True)]
        log.info(
            "spatial draws per epoch scaled by %s (epoch_balance=%g)",
            ", ".join(f"{f:.2f}" for f in factors),
            self.epoch_balance,
        )
        return weights

    def _set_temporal_anchors(self, knn_points: np.ndarray) -> None:
        """Fill ``anchor`` and ``anchor_weight`` from every vertex's k-NN as point indices
        (:func:`~ttvis.temporal.successor_anchors`), logged."""
        self.anchor, self.anchor_weight = successor_anchors(
            self.layout, knn_points, self.anchor_power
        )
        have = self.anchor >= 0
        mean = float(self.anchor_weight[have].mean()) if have.any() else 0.0
        light = have & (self.anchor_weight < self.anchor_min_weight)
        self.anchor[light] = -1
        self.anchor_weight[light] = 0.0
        log.info(
            "temporal anchors: %d vertices, mean weight %.3f (anchor_power=%g); %d lighter "
            "than %g dropped",
            int(have.sum()),
            mean,
            self.anchor_power,
            int(light.sum()),
            self.anchor_min_weight,
        )

    def _log_complex(self, spatial_seconds: float, temporal_seconds: float) -> None:
        """One line on the built complex: vertices, edges, draws, build times."""
        log.info(
            "TimeVis complex: %d vertices over %d epochs, %d spatial + %d temporal edges, "
            "%d draws per visualizer epoch, %d segments across the decision boundaries "
            "(spatial %.1fs, temporal %.1fs)",
            self.layout.n_vertices,
            len(self.run.epochs),
            len(self.spatial),
            len(self.temporal),
            self.n_edges,
            0 if self.segments is None else len(self.segments),
            spatial_seconds,
            temporal_seconds,
        )

    # ------------------------------------------------------------------ what the callbacks read
    @property
    def export_epochs(self) -> list[int]:
        """Every run epoch: one visualizer exports them all."""
        return list(self.run.epochs)

    @property
    def progress_label(self) -> str:
        """``TimeVis (E epochs)`` for the progress bar."""
        return f"TimeVis ({len(self.run.epochs)} epochs)"

    def input_normalisation(self) -> tuple[Tensor, Tensor | float]:
        """With ``normalisation="epoch"``: ``(shift [E, D], scale [E])``, each epoch's
        per-dimension mean and root mean variance over its vertices. Every epoch is centred and
        scaled on its own, so an epoch whose features are many times smaller than the others'
        (early in training) fills the network's input space as much as they do; each epoch's
        exported model (``vismodel/{epoch}.pth``) has its own folded in. With ``"shared"``:
        ``(shift [D], scale)`` over every vertex, one normalisation for all epochs."""
        if self.normalisation == "shared":
            return super().input_normalisation()
        self.build()
        shifts, scales = [], []
        for t in range(self.layout.n_epochs):
            shift, scale = self.normalisation_of(self._reps[self.layout.epoch_slice(t)])
            shifts.append(shift)
            scales.append(scale)
        return torch.stack(shifts), torch.tensor(scales, dtype=torch.float32)

    # ------------------------------------------------------------------ streaming
    def stream_spec(self) -> tuple[EdgeSet, int, int, dict[str, Tensor]]:
        """The combined edges, their draws, each vertex's epoch position (its normalisation
        and head) and, with anchors, each vertex's ``anchor_weight`` and its anchor vertex's
        epoch position ``anchor_epoch_pos``."""
        epoch_pos = self.layout.epoch_pos
        vertex_data = {"epoch_pos": torch.as_tensor(epoch_pos)}
        if self.anchor_weight is not None:
            vertex_data["anchor_weight"] = torch.as_tensor(self.anchor_weight)
            anchor_pos = np.where(
                self.anchor >= 0, epoch_pos[np.maximum(self.anchor, 0)], epoch_pos
            )
            vertex_data["anchor_epoch_pos"] = torch.as_tensor(anchor_pos)
        return self.edges, self.n_edges, self.seed * 1_000_003, vertex_data

    def anchor_vertices(self) -> np.ndarray | None:
        """``[V]`` each vertex's anchor vertex (``-1``: none), or None without anchors."""
        return self.anchor

    def segment_spec(self) -> tuple[FlipSegments | None, float, float]:
        """Every epoch's segments across its subject's decision boundary (vertex indices, so
        each point keeps its epoch) and how to sample them."""
        self.build()
        return self.segments, self.boundary_mix_fraction, self.boundary_mix_width
