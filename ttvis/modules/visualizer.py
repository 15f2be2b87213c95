"""The visualizer LightningModule: trains an :class:`Autoencoder` on streamed complex edges."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from typing import NamedTuple

import lightning as L
import torch
from torch import Tensor, nn

from ttvis.floats import flush_subnormals
from ttvis.modules.autoencoder import Autoencoder
from ttvis.modules.losses import (
    anchor_loss,
    prediction_loss,
    reconstruction_loss,
    temporal_loss,
    umap_ab,
    umap_loss,
)
from ttvis.modules.step_graph import GraphedSteps


def interpolate_edges(
    x_head: Tensor, x_tail: Tensor, noise: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Random points between edge ends, optionally shaken off the segment.

    ``l * x_head + (1 - l) * x_tail`` with ``l ~ U(0, 1)`` per edge, plus isotropic Gaussian
    noise whose per-dimension standard deviation is ``noise * |x_head - x_tail| / sqrt(D)``:
    with ``noise = 1`` the displacement is as long as the edge, so the points fill the
    neighbourhood of the data where unseen samples lie, not just the lines between samples.

    Args:
        x_head, x_tail: ``[M, D]`` edge ends (the network's normalised inputs).
        noise: displacement relative to the edge length; 0 keeps the points on the segments.
        generator: random source on the tensors' device.

    Returns:
        ``[M, D]``.
    """
    lam = torch.rand(x_head.shape[0], 1, device=x_head.device, generator=generator)
    points = lam * x_head + (1 - lam) * x_tail
    if noise > 0:
        diff = x_head - x_tail
        spread = diff.norm(dim=1, keepdim=True) / diff.shape[1] ** 0.5
        eps = torch.randn(points.shape, device=points.device, generator=generator)
        points = points + noise * spread * eps
    return points


class ReconstructedRows(NamedTuple):
    """The rows of a training step that are decoded (see
    :meth:`VisualizerModule._reconstructed_rows`)."""

    x: Tensor  # [R, D] normalised inputs
    x_hat: Tensor  # [R, D] their reconstructions
    counts: Tensor | None  # [R] each row's weight in the losses (None: equal)
    rows: Tensor | None  # [R] epoch positions (batches with epoch_pos), or None
    pred_weight: Tensor | None  # [R] 0 leaves a row out of the prediction loss, or None
    row_weights: Tensor | None  # [R] rows of the batch each stands for (None: every row decoded)


class TrainingDiverged(FloatingPointError):
    """The visualizer's loss became NaN or infinite; the message names the subject epoch."""


class VisualizerModule(GraphedSteps, L.LightningModule):
    """Parametric UMAP + reconstruction (+ temporal anchor) for one visualizer.

    A batch, as the edge streams yield it, holds the distinct vertices of ``B`` edges once:
    ``x [U, D]``, ``head_pos [B]`` and ``tail_pos [B]`` (rows of ``x``), and ``counts [U]``
    and ``vertex [U]`` (each row's vertex, which tells the UMAP loss what is not a negative);
    optionally per-vertex ``anchor [U, 2]`` or ``anchor_x [U, D]`` and ``anchor_weight [U]``
    (temporal anchors: positions, or features to encode; ``anchor_x [A, D]`` with
    ``anchor_rows [A]`` when only some vertices have one) and
    ``pred_weight [U]`` (0 leaves a vertex, e.g. a boundary point, out of the prediction loss)
    and ``boundary_x [S, D]``, points near the subject's decision boundary that join the
    reconstruction and prediction losses.

    Args:
        encoder_dims: ``[D, ..., 2]``.
        decoder_dims: ``[2, ..., D]``.
        optimizer: partial optimizer factory (``_partial_: true`` in config).
        scheduler: partial LR-scheduler factory, stepped once per visualizer epoch, or None.
        lambda1: weight of the reconstruction loss.
        lambda_pred: weight of the prediction-preserving loss (needs ``subject_head``).
        input_shift: ``[D]`` per-dimension mean of the subject epoch's representations.
        input_scale: their root mean per-dimension variance. The network sees
            ``(x - input_shift) / input_scale``, so ``lambda1``, the learning rate and the
            temporal weight mean the same whatever the features' scale and drift over training;
            the exported model has the normalisation folded in.
        subject_head: frozen classifier head ``[B, D] -> [B, C]``, or None.
        mix_fraction: share of the batch's edges whose random interpolation
            ``l * x_head + (1 - l) * x_tail`` is added to the reconstruction and prediction
            losses, so the inverse mapping also learns the space between samples (where unseen
            samples and decision boundaries lie); 0 turns it off.
        mix_noise: those points are also displaced by Gaussian noise of this size relative to
            the edge length (:func:`interpolate_edges`), so the inverse mapping and the
            prediction loss cover the data's neighbourhood, not only its segments; 0: none.
        recon_rows: a step's vertex rows decoded for the reconstruction and prediction losses,
            at most (drawn at random, weighed up so the losses estimate the full batch's; the
            interpolated and boundary points always are); None: every one. Every vertex row is
            still encoded for the UMAP loss. Decoding to ``D`` dimensions is about half a
            step's arithmetic, and a large run's batches hold nearly one vertex per edge end.
        lambda_anchor: weight of the positional temporal loss: each vertex is pulled towards
            its anchor in proportion to the share of its neighbours it kept (``anchor_weight``),
            so samples whose neighbourhood is stable stay put and those whose neighbourhood
            changed move. The anchor is the vertex's position under the previous visualizer
            (DVI: batches carry ``anchor [U, 2]``) or the position this visualizer gives the
            same sample's next-epoch copy (TimeVis: ``anchor_x [U, D]``, both ends trained).
        anchor_fraction: share of a batch's anchored vertices whose ``anchor_x`` is encoded in a
            step, drawn at random; the others' terms are left out and the kept ones weighed up
            by ``A / kept``, an unbiased estimate of the anchor loss at that share of the
            encoder passes (1: every one). Anchors given as positions are all used.
        lambda_layout: weight of the layout targets: each training vertex's squared distance to
            its position in UMAP's own layout (batches carry ``layout [U, 2]`` and
            ``layout_weight [U]``, 0 for vertices without one); 0 turns it off.
        negative_sample_rate: negatives per edge in the UMAP loss.
        spread, min_dist: UMAP curve shape, turned into ``a, b`` by umap-learn.
        repulsion_strength: weight of the UMAP loss's negative term.
        subject_epoch: the subject epoch this visualizer is for (tags the logs).
        log_prefix: tag prefix for the logger, e.g. ``DVI/epoch_3``.
        seed: seeds the negative sampling.
        epoch_bias: with per-epoch normalisation, one learned first-layer bias per epoch in the
            encoder and the decoder (:class:`Autoencoder`'s ``n_epochs``); an error with one
            normalisation (``input_shift [D]``); without ``input_shift``, none.
        lr_ramp_epochs: the scheduler's rate ramps up linearly over this many visualizer
            epochs (:meth:`optimizer_step`), so Adam's first steps do not shake a warm start.
        step_graph: on one CUDA device at 32-bit precision, capture the step's forward and
            backward pass in a CUDA graph on the first step and replay it (one launch instead
            of a few hundred; :class:`StepGraph`); elsewhere, or False, every step runs eagerly.
    """

    def __init__(
        self,
        encoder_dims: list[int],
        decoder_dims: list[int],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        lambda1: float = 1.0,
        lambda_pred: float = 0.0,
        input_shift: Tensor | None = None,
        input_scale: float = 1.0,
        subject_head: nn.Module | None = None,
        mix_fraction: float = 0.0,
        mix_noise: float = 0.0,
        recon_rows: int | None = None,
        lambda_anchor: float = 0.0,
        anchor_fraction: float = 1.0,
        lambda_layout: float = 0.0,
        negative_sample_rate: int = 5,
        spread: float = 1.0,
        min_dist: float = 0.1,
        repulsion_strength: float = 1.0,
        subject_epoch: int = 1,
        log_prefix: str = "visualizer",
        seed: int = 0,
        epoch_bias: bool = False,
        lr_ramp_epochs: float = 0.0,
        step_graph: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "subject_head", "input_shift"])
        self._register_normalisation(encoder_dims[0], input_shift, input_scale)
        self.autoencoder = self._build_autoencoder(
            encoder_dims, decoder_dims, epoch_bias and input_shift is not None
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.lambda1 = lambda1
        self.lambda_pred = lambda_pred if subject_head is not None else 0.0
        self.subject_head = subject_head
        self.mix_fraction, self.mix_noise = mix_fraction, mix_noise
        if recon_rows is not None and recon_rows < 1:
            raise ValueError(f"recon_rows={recon_rows}: expected a positive count or None")
        self.recon_rows = None if recon_rows is None else int(recon_rows)
        self.lambda_anchor, self.anchor_fraction = lambda_anchor, anchor_fraction
        self.lambda_layout, self.repulsion_strength = lambda_layout, repulsion_strength
        if subject_head is not None:
            subject_head.requires_grad_(False)
        self.negative_sample_rate = negative_sample_rate
        self.a, self.b = umap_ab(spread, min_dist)
        self.subject_epoch, self.log_prefix, self.seed = subject_epoch, log_prefix, seed
        self.lr_ramp_epochs, self.temporal_weight = float(lr_ramp_epochs), 0.0
        self._init_step_graph(step_graph)
        self._previous_weights: list[Tensor] = []  # the previous visualizer's parameters
        self._generator: torch.Generator | None = None
        self.edges_seen = 0  # edges trained on by this process, for throughput reports
        self.last_finite_loss: float | None = None  # the last visualizer epoch's mean loss
        self._epoch_sums: dict[str, Tensor] = {}  # per loss term: sum over batches of B * loss
        self._epoch_edges = 0
        # Pickled with the module into ddp_spawn/ddp_fork workers, so there it differs from
        # os.getpid(): see teardown.
        self._built_in_pid = os.getpid()

    def _build_autoencoder(
        self, encoder_dims: list[int], decoder_dims: list[int], epoch_bias: bool
    ) -> Autoencoder:
        """The :class:`Autoencoder`, with one first-layer bias per epoch when ``epoch_bias``
        (which needs per-epoch normalisation, registered before)."""
        n_epochs = 0
        if epoch_bias:
            if not self.per_epoch_normalisation:
                raise ValueError("epoch_bias needs per-epoch normalisation (input_shift [E, D])")
            n_epochs = self.input_shift.shape[0]
        return Autoencoder(list(encoder_dims), list(decoder_dims), n_epochs)

    def _register_normalisation(
        self, dim: int, input_shift: Tensor | None, input_scale: Tensor | float
    ) -> None:
        """The ``input_shift`` and ``input_scale`` buffers (a scale that is not positive, a
        constant epoch's, becomes 1: centred, not divided by 0); inference starts with the
        first epoch's normalisation selected."""
        shift = torch.zeros(dim) if input_shift is None else input_shift
        self.register_buffer("input_shift", torch.as_tensor(shift, dtype=torch.float32))
        scale = torch.as_tensor(input_scale, dtype=torch.float32).clone()
        scale[~(scale > 0)] = 1.0  # a constant epoch: centre it, do not divide by 0
        self.register_buffer("input_scale", scale)
        self._selected = 0  # the epoch position inference uses with per-epoch normalisation

    # ------------------------------------------------------------------ inference API
    @property
    def per_epoch_normalisation(self) -> bool:
        """Whether each subject epoch has its own input normalisation (``input_shift [E, D]``,
        ``input_scale [E]``) rather than one (``[D]`` and a scalar)."""
        return self.input_shift.dim() == 2

    def select_epoch(self, position: int) -> None:
        """Use the normalisation of epoch position ``position`` (0-based in the run's epoch
        list) in :meth:`encode`, :meth:`decode` and :meth:`export_state`; a visualizer with one
        normalisation ignores it."""
        self._selected = int(position)

    def _shift_scale(self, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(shift, scale)`` broadcastable against ``[B, D]`` rows whose epoch positions are
        ``rows [B]`` (None: the selected epoch's)."""
        if not self.per_epoch_normalisation:
            return self.input_shift, self.input_scale
        if rows is None:
            return self.input_shift[self._selected], self.input_scale[self._selected]
        return self.input_shift[rows], self.input_scale[rows][:, None]

    def normalise(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """Raw representations ``[B, D]`` -> the network's input space; ``rows [B]``: each
        row's epoch position, with per-epoch normalisation (None: the selected epoch)."""
        shift, scale = self._shift_scale(rows)
        return (x - shift) / scale

    def denormalise(self, x: Tensor, rows: Tensor | None = None) -> Tensor:
        """The network's output space ``[B, D]`` -> raw representations (``rows`` as in
        :meth:`normalise`)."""
        shift, scale = self._shift_scale(rows)
        return x * scale + shift

    def encode(self, x: Tensor) -> Tensor:
        """Representations ``[B, D]`` -> 2-D positions ``[B, 2]``."""
        return self.autoencoder.encode(self.normalise(x), self._bias_rows())

    def decode(self, z: Tensor) -> Tensor:
        """2-D positions ``[B, 2]`` -> representations ``[B, D]``."""
        return self.denormalise(self.autoencoder.decode(z, self._bias_rows()))

    def _bias_rows(self) -> int | None:
        """The selected epoch position, for an autoencoder with per-epoch biases."""
        return self._selected if self.autoencoder.n_epochs > 0 else None

    def export_state(self) -> dict:
        """The visualizer as ``vismodel/*.pth`` stores it: raw representations in and out
        (with per-epoch normalisation: the selected epoch's)."""
        shift, scale = self._shift_scale(None)
        return self.autoencoder.export_state(shift, scale, self._bias_rows())

    # ------------------------------------------------------------------ warm start
    def warm_start(self, state_dict: dict[str, Tensor], temporal_weight: float) -> None:
        """Start from a previous visualizer and pull towards it with ``temporal_weight``.

        Args:
            state_dict: the previous subject epoch's :class:`Autoencoder` state.
            temporal_weight: ``lambda2 * mean_i(kept_share_i)``; 0 disables the temporal loss.
        """
        self.autoencoder.load_state_dict(state_dict)
        self.temporal_weight = float(temporal_weight)
        names = [name for name, _ in self.autoencoder.named_parameters()]
        self._previous_weights = [state_dict[name].detach().clone() for name in names]

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        flush_subnormals()  # again: a process a spawn launcher started did not open the run
        self._previous_weights = [w.to(self.device) for w in self._previous_weights]
        self._release_step_graph()  # a graph holds its generator and the parameters' memory
        rank = self.trainer.global_rank if self._trainer is not None else 0
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed * 7919 + self.subject_epoch * 104729 + rank)

    def row_epochs(self, batch: dict[str, Tensor]) -> Tensor | None:
        """``[U + M + S]`` epoch position of every row the network sees in a step: the batch's
        vertices (``epoch_pos``), then its ``M`` edge interpolations (each takes its head
        end's), then its ``S`` points near the decision boundary (``boundary_epoch_pos``);
        None when the batch carries no ``epoch_pos``."""
        epoch_pos = batch.get("epoch_pos")
        if epoch_pos is None:
            return None
        n_mix = int(round(self.mix_fraction * batch["head_pos"].shape[0]))
        parts = [epoch_pos, epoch_pos[batch["head_pos"][:n_mix]]]
        if "boundary_epoch_pos" in batch:
            parts.append(batch["boundary_epoch_pos"])
        return torch.cat(parts)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self._graphed_losses(batch)
        if losses is None:
            losses = self.step_losses(batch)
        n_edges = batch["head_pos"].shape[0]
        self.edges_seen += n_edges
        self._accumulate(losses, n_edges)
        return losses["total"]

    def step_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The step's loss terms ``{name: scalar}`` on a batch, their weighted sum as
        ``"total"`` (the UMAP and reconstruction terms, then those of :meth:`_further_terms`)."""
        rows = self.row_epochs(batch)  # per-epoch normalisation, biases and subject heads
        if rows is not None and "boundary_x" in batch and "boundary_epoch_pos" not in batch:
            raise ValueError(
                "boundary_x rows without boundary_epoch_pos: a batch with epoch positions "
                "needs each row's epoch"
            )
        x, x_all, counts = self._step_rows(batch, rows)
        z_all = self.autoencoder.encode(x_all, rows)
        z = z_all[: x.shape[0]]
        recon = self._reconstructed_rows(batch, x.shape[0], x_all, z_all, counts, rows)
        head_pos, tail_pos, vertex = batch["head_pos"], batch["tail_pos"], batch.get("vertex")
        losses = {
            "umap": umap_loss(
                z[head_pos],
                z[tail_pos],
                self.a,
                self.b,
                negative_sample_rate=self.negative_sample_rate,
                repulsion_strength=self.repulsion_strength,
                generator=self._generator,
                head_vertex=None if vertex is None else vertex[head_pos],
                tail_vertex=None if vertex is None else vertex[tail_pos],
                negatives=self.draw_negatives(rows, head_pos, tail_pos),
            ),
            "recon": reconstruction_loss(recon.x, recon.x_hat, recon.counts),
        }
        total = losses["umap"] + self.lambda1 * losses["recon"]
        for name, weight, loss in self._further_terms(batch, rows, recon, z):
            total = total + weight * loss
            losses[name] = loss
        losses["total"] = total
        return losses

    def draw_negatives(
        self, rows: Tensor | None, head_pos: Tensor, tail_pos: Tensor
    ) -> Tensor | None:
        """``[B * m]`` the tails the UMAP loss repels each edge's head from (positions among
        the batch's edges; :func:`~ttvis.modules.losses.umap_loss`), or None, as here: the
        loss draws them uniformly from the batch."""
        return None

    def _reconstructed_rows(
        self,
        batch: dict[str, Tensor],
        n_vertices: int,
        x_all: Tensor,
        z_all: Tensor,
        counts: Tensor | None,
        rows: Tensor | None,
    ) -> ReconstructedRows:
        """The step's rows that are decoded and join the reconstruction and prediction losses.

        Every extra row (``x_all`` past the ``n_vertices`` vertex rows) is; of the vertex rows,
        all of them, or ``recon_rows`` drawn at random when there are more, each kept row
        standing for ``n_vertices / recon_rows`` rows (its count and its weight in the
        prediction loss's logit spread multiplied by that), so the extra rows keep their share
        and the losses estimate the full batch's (ratio estimates: a bias of order
        ``1 / recon_rows``).
        """
        pred_weight = batch.get("pred_weight")
        if pred_weight is not None and x_all.shape[0] > n_vertices:  # extra rows weigh 1
            extra = pred_weight.new_ones(x_all.shape[0] - n_vertices)
            pred_weight = torch.cat([pred_weight, extra])
        row_weights = None
        if self.recon_rows is not None and n_vertices > self.recon_rows:
            device = x_all.device
            drawn = torch.randperm(n_vertices, device=device, generator=self._generator)
            keep = torch.cat(
                [drawn[: self.recon_rows], torch.arange(n_vertices, x_all.shape[0], device=device)]
            )
            row_weights = torch.ones(x_all.shape[0], device=device, dtype=x_all.dtype)
            row_weights[:n_vertices] = n_vertices / self.recon_rows
            counts = row_weights if counts is None else counts.to(x_all.dtype) * row_weights
            x_all, z_all, counts = x_all[keep], z_all[keep], counts[keep]
            rows = None if rows is None else rows[keep]
            pred_weight = None if pred_weight is None else pred_weight[keep]
            row_weights = row_weights[keep]
        x_hat = self.autoencoder.decode(z_all, rows)
        return ReconstructedRows(x_all, x_hat, counts, rows, pred_weight, row_weights)

    def subject_logits(self, x: Tensor, rows: Tensor | None) -> Tensor:
        """The subject head's logits ``[M, C]`` on raw representations ``x [M, D]`` whose epoch
        positions are ``rows [M]`` (None: one epoch)."""
        return self.subject_head(x)

    def _step_rows(
        self, batch: dict[str, Tensor], rows: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The rows the network sees in a step, normalised: ``(x, x_all, counts)``.

        ``x [U, D]`` the batch's vertices; ``x_all`` them and, after them, the rows that join
        only the reconstruction and prediction losses: interpolations between edge ends
        (``mix_fraction``, drawn from the module's generator) and points near the subject's
        decision boundary (``boundary_x``). ``counts``: each row's edge-end multiplicity
        (extra rows count once; None when the batch has none and there are no extra rows).
        """
        x = self.normalise(batch["x"], None if rows is None else rows[: batch["x"].shape[0]])
        head_pos, tail_pos = batch["head_pos"], batch["tail_pos"]
        counts = batch.get("counts")
        extra = []
        n_mix = int(round(self.mix_fraction * head_pos.shape[0]))
        if n_mix > 0:
            extra.append(
                interpolate_edges(
                    x[head_pos[:n_mix]], x[tail_pos[:n_mix]], self.mix_noise, self._generator
                )
            )
        if "boundary_x" in batch:
            boundary_x = batch["boundary_x"]
            boundary_rows = None if rows is None else rows[rows.shape[0] - boundary_x.shape[0] :]
            extra.append(self.normalise(boundary_x, boundary_rows))
        x_all = x
        if extra:
            x_all = torch.cat([x, *extra])
            if counts is None:
                counts = torch.ones(x.shape[0], device=x.device, dtype=torch.long)
            counts = torch.cat([counts, counts.new_ones(x_all.shape[0] - x.shape[0])])
        return x, x_all, counts

    def _further_terms(
        self,
        batch: dict[str, Tensor],
        rows: Tensor | None,
        recon: ReconstructedRows,
        z: Tensor,
    ) -> Iterator[tuple[str, float, Tensor]]:
        """``(name, weight, loss)`` of each loss term beyond UMAP and reconstruction that is
        on, in the order they join the total: layout, prediction, temporal, anchor. Each is
        computed when the caller asks for it, so the step's operations keep one order."""
        if self.lambda_layout > 0 and "layout" in batch:
            loss = anchor_loss(z, batch["layout"], batch["layout_weight"], batch.get("counts"))
            yield "layout", self.lambda_layout, loss
        if self.lambda_pred > 0:
            with torch.no_grad():
                target = self.subject_logits(self.denormalise(recon.x, recon.rows), recon.rows)
            logits_recon = self.subject_logits(
                self.denormalise(recon.x_hat, recon.rows), recon.rows
            )
            pred_counts = recon.counts
            if recon.pred_weight is not None:  # vertices left out of the prediction loss weigh 0
                pred_counts = (
                    recon.pred_weight
                    if pred_counts is None
                    else pred_counts.to(recon.x.dtype) * recon.pred_weight
                )
            loss = prediction_loss(target, logits_recon, pred_counts, recon.row_weights)
            yield "pred", self.lambda_pred, loss
        if self.temporal_weight > 0 and self._previous_weights:
            loss = temporal_loss(list(self.autoencoder.parameters()), self._previous_weights)
            yield "temporal", self.temporal_weight, loss
        if self.lambda_anchor > 0 and ("anchor" in batch or "anchor_x" in batch):
            if "anchor_x" in batch:  # TimeVis: where this visualizer puts the anchor vertex
                anchor, weight, anchored = self._encoded_anchors(batch, rows)
            else:  # DVI: the position under the previous visualizer
                anchor, weight, anchored = batch["anchor"], batch["anchor_weight"], None
            loss = anchor_loss(z, anchor, weight, batch.get("counts"), anchored)
            yield "anchor", self.lambda_anchor, loss

    def _encoded_anchors(
        self, batch: dict[str, Tensor], rows: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(anchor [K, 2], weight [K], anchored [K] or None)``: the positions this visualizer
        gives a random ``anchor_fraction`` of the batch's anchor vertices (``anchor_x``), their
        weights scaled by the inverse share kept (an unbiased estimate of the anchor loss), and
        the rows of ``x`` they belong to (None: all of them, in order)."""
        anchor_x, weight = batch["anchor_x"], batch["anchor_weight"]
        epochs = batch.get("anchor_epoch_pos") if rows is not None else None
        anchored = batch.get("anchor_rows")
        if anchored is not None:  # only the vertices that have an anchor carry one
            weight = weight[anchored]
            epochs = None if epochs is None else epochs[anchored]
        n_anchored = anchor_x.shape[0]
        n_kept = math.ceil(self.anchor_fraction * n_anchored)
        if n_kept < n_anchored:
            keep = torch.randperm(n_anchored, device=anchor_x.device, generator=self._generator)
            keep = keep[:n_kept]
            anchored = keep if anchored is None else anchored[keep]
            anchor_x, weight = anchor_x[keep], weight[keep] * (n_anchored / n_kept)
            epochs = None if epochs is None else epochs[keep]
        anchor = self.autoencoder.encode(self.normalise(anchor_x, epochs), epochs)
        return anchor, weight, anchored

    def _accumulate(self, losses: dict[str, Tensor], n_edges: int) -> None:
        """Add this batch's losses, weighted by its edges, to the visualizer epoch's sums.

        Nothing leaves the device here: the sums are read once per visualizer epoch
        (:meth:`on_train_epoch_end`), so a step never waits for the accelerator.
        """
        with torch.no_grad():
            for name, value in losses.items():
                term = value.detach() * n_edges
                if name in self._epoch_sums:
                    self._epoch_sums[name] += term
                else:
                    self._epoch_sums[name] = term.clone()
        self._epoch_edges += n_edges

    def on_train_epoch_start(self) -> None:
        self._epoch_sums = {}
        self._epoch_edges = 0

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """One optimizer step; during the first ``lr_ramp_epochs`` it runs at ``(s + 1) /
        ramp_steps`` of the scheduler's rate (step ``s``), restored right after, so the
        scheduler never sees a ramped rate (Lightning's warm-up pattern; host-side only)."""
        share = self._lr_ramp_share()
        if share >= 1.0:
            optimizer.step(closure=optimizer_closure)
            return
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
            group["lr"] = lr * share
        try:
            optimizer.step(closure=optimizer_closure)
        finally:
            for group, lr in zip(optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr

    def _lr_ramp_share(self) -> float:
        """The share of the scheduler's rate this step trains at (1: no ramp, or past it)."""
        if self.lr_ramp_epochs <= 0:
            return 1.0
        batches = self.trainer.num_training_batches
        if not math.isfinite(batches):  # a stream of unknown length: no ramp
            return 1.0
        # global_step counts optimizer steps: one per accumulate_grad_batches batches.
        ramp_steps = self.lr_ramp_epochs * max(batches / self.trainer.accumulate_grad_batches, 1)
        return min((self.global_step + 1) / ramp_steps, 1.0)

    def on_train_epoch_end(self) -> None:
        """Check the epoch's loss is finite, then log each term's mean over the epoch's edges
        (tagged, to the logger) and the total as ``loss`` (early stopping, progress bar)."""
        if not self._epoch_sums:
            return
        means = {k: v / max(self._epoch_edges, 1) for k, v in self._epoch_sums.items()}
        total = float(means["total"])  # the one host synchronisation per visualizer epoch
        if not math.isfinite(total):
            last = "none" if self.last_finite_loss is None else f"{self.last_finite_loss:.6g}"
            raise TrainingDiverged(
                f"{self.log_prefix}: the loss became {total} in subject epoch "
                f"{self.subject_epoch}, visualizer epoch {self.current_epoch + 1} (last finite "
                f"loss: {last}, the previous visualizer epoch's mean); nothing was exported "
                "for this epoch. Try a lower method.optimizer.lr."
            )
        self.last_finite_loss = total
        for name, value in means.items():  # averaged over the processes once per epoch
            self.log(
                f"{self.log_prefix}/{name}", value, on_step=False, on_epoch=True, sync_dist=True
            )
        # Untagged copy for early stopping and the progress bar; not sent to the logger.
        self.log("loss", means["total"], prog_bar=True, logger=False, sync_dist=True)

    def teardown(self, stage: str) -> None:
        # A worker process that a spawn or fork launcher (ddp_spawn, ddp_fork) started for this
        # fit, with a copy of this module, exits right after it. Destroy its process group now:
        # left to interpreter exit, gloo's threads can abort the exit ("terminate called
        # without an active exception"). Processes that built their own module (strategy=ddp,
        # whose ranks live across fits, or a single process) keep theirs.
        if os.getpid() != self._built_in_pid and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.autoencoder.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
