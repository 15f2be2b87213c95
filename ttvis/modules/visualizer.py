"""The visualizer LightningModule: trains an :class:`Autoencoder` on streamed complex edges."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from ttvis.modules.autoencoder import Autoencoder
from ttvis.modules.losses import (
    anchor_loss,
    prediction_loss,
    reconstruction_loss,
    temporal_loss,
    umap_ab,
    umap_loss,
)


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


class TrainingDiverged(FloatingPointError):
    """The visualizer's loss became NaN or infinite; the message names the subject epoch."""


class VisualizerModule(L.LightningModule):
    """Parametric UMAP + reconstruction (+ temporal anchor) for one visualizer.

    A batch, as the edge streams yield it, holds the distinct vertices of ``B`` edges once:
    ``x [U, D]``, ``head_pos [B]`` and ``tail_pos [B]`` (rows of ``x``), and ``counts [U]``;
    optionally per-vertex ``anchor [U, 2]`` or ``anchor_x [U, D]`` and ``anchor_weight [U]``
    (temporal anchors: positions, or features to encode) and
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
        lambda_anchor: weight of the positional temporal loss: each vertex is pulled towards
            its anchor in proportion to the share of its neighbours it kept (``anchor_weight``),
            so samples whose neighbourhood is stable stay put and those whose neighbourhood
            changed move. The anchor is the vertex's position under the previous visualizer
            (DVI: batches carry ``anchor [U, 2]``) or the position this visualizer gives the
            same sample's next-epoch copy (TimeVis: ``anchor_x [U, D]``, both ends trained).
        negative_sample_rate: negatives per edge in the UMAP loss.
        spread, min_dist: UMAP curve shape, turned into ``a, b`` by umap-learn.
        repulsion_strength: weight of the UMAP loss's negative term.
        subject_epoch: the subject epoch this visualizer is for (tags the logs).
        log_prefix: tag prefix for the logger, e.g. ``DVI/epoch_3``.
        seed: seeds the negative sampling.
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
        lambda_anchor: float = 0.0,
        negative_sample_rate: int = 5,
        spread: float = 1.0,
        min_dist: float = 0.1,
        repulsion_strength: float = 1.0,
        subject_epoch: int = 1,
        log_prefix: str = "visualizer",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "subject_head", "input_shift"])
        self.autoencoder = Autoencoder(list(encoder_dims), list(decoder_dims))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lambda1 = lambda1
        self.lambda_pred = lambda_pred if subject_head is not None else 0.0
        shift = torch.zeros(encoder_dims[0]) if input_shift is None else input_shift
        self.register_buffer("input_shift", torch.as_tensor(shift, dtype=torch.float32))
        scale = float(input_scale) if input_scale > 0 else 1.0
        self.register_buffer("input_scale", torch.tensor(scale, dtype=torch.float32))
        self.subject_head = subject_head
        self.mix_fraction = mix_fraction
        self.mix_noise = mix_noise
        self.lambda_anchor = lambda_anchor
        if subject_head is not None:
            subject_head.requires_grad_(False)
        self.negative_sample_rate = negative_sample_rate
        self.repulsion_strength = repulsion_strength
        self.a, self.b = umap_ab(spread, min_dist)
        self.subject_epoch = subject_epoch
        self.log_prefix = log_prefix
        self.seed = seed
        self.temporal_weight = 0.0
        self._anchors: list[Tensor] = []
        self._generator: torch.Generator | None = None
        self.edges_seen = 0  # edges trained on by this process, for throughput reports
        self.last_finite_loss: float | None = None
        # Pickled with the module into ddp_spawn/ddp_fork workers, so there it differs from
        # os.getpid(): see teardown.
        self._built_in_pid = os.getpid()

    # ------------------------------------------------------------------ inference API
    def normalise(self, x: Tensor) -> Tensor:
        """Raw representations ``[B, D]`` -> the network's input space."""
        return (x - self.input_shift) / self.input_scale

    def denormalise(self, x: Tensor) -> Tensor:
        """The network's output space ``[B, D]`` -> raw representations."""
        return x * self.input_scale + self.input_shift

    def encode(self, x: Tensor) -> Tensor:
        """Representations ``[B, D]`` -> 2-D positions ``[B, 2]``."""
        return self.autoencoder.encoder(self.normalise(x))

    def decode(self, z: Tensor) -> Tensor:
        """2-D positions ``[B, 2]`` -> representations ``[B, D]``."""
        return self.denormalise(self.autoencoder.decoder(z))

    def export_state(self) -> dict:
        """The visualizer as ``vismodel/*.pth`` stores it: raw representations in and out."""
        return self.autoencoder.export_state(self.input_shift, self.input_scale)

    # ------------------------------------------------------------------ warm start
    def warm_start(self, state_dict: dict[str, Tensor], temporal_weight: float) -> None:
        """Start from a previous visualizer and pull towards it with ``temporal_weight``.

        Args:
            state_dict: the previous subject epoch's :class:`Autoencoder` state.
            temporal_weight: ``lambda2 * mean_i(npr_i)``; 0 disables the temporal loss.
        """
        self.autoencoder.load_state_dict(state_dict)
        self.temporal_weight = float(temporal_weight)
        names = [name for name, _ in self.autoencoder.named_parameters()]
        self._anchors = [state_dict[name].detach().clone() for name in names]

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        self._anchors = [a.to(self.device) for a in self._anchors]
        rank = self.trainer.global_rank if self._trainer is not None else 0
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed * 7919 + self.subject_epoch * 104729 + rank)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x = self.normalise(batch["x"])
        head_pos, tail_pos = batch["head_pos"], batch["tail_pos"]
        counts = batch.get("counts")
        # Rows beyond the vertices join only the reconstruction and prediction losses:
        # interpolations between edge ends, and points near the subject's decision boundary.
        extra = []
        n_mix = int(round(self.mix_fraction * head_pos.shape[0]))
        if n_mix > 0:
            extra.append(
                interpolate_edges(
                    x[head_pos[:n_mix]], x[tail_pos[:n_mix]], self.mix_noise, self._generator
                )
            )
        if "boundary_x" in batch:
            extra.append(self.normalise(batch["boundary_x"]))
        x_all = x
        if extra:
            x_all = torch.cat([x, *extra])
            if counts is None:
                counts = torch.ones(x.shape[0], device=x.device, dtype=torch.long)
            counts = torch.cat([counts, counts.new_ones(x_all.shape[0] - x.shape[0])])
        z_all, x_hat = self.autoencoder(x_all)
        z = z_all[: x.shape[0]]
        loss_umap = umap_loss(
            z[head_pos],
            z[tail_pos],
            self.a,
            self.b,
            negative_sample_rate=self.negative_sample_rate,
            repulsion_strength=self.repulsion_strength,
            generator=self._generator,
        )
        loss_recon = reconstruction_loss(x_all, x_hat, counts)
        total = loss_umap + self.lambda1 * loss_recon
        losses = {"umap": loss_umap, "recon": loss_recon}
        if self.lambda_pred > 0:
            with torch.no_grad():
                target = self.subject_head(self.denormalise(x_all))
            logits_recon = self.subject_head(self.denormalise(x_hat))
            pred_counts = counts
            if "pred_weight" in batch:  # vertices left out of the prediction loss weigh 0
                pred_counts = counts.to(x.dtype).clone()
                pred_counts[: x.shape[0]] *= batch["pred_weight"]
            loss_pred = prediction_loss(target, logits_recon, pred_counts)
            total = total + self.lambda_pred * loss_pred
            losses["pred"] = loss_pred
        if self.temporal_weight > 0 and self._anchors:
            loss_temporal = temporal_loss(list(self.autoencoder.parameters()), self._anchors)
            total = total + self.temporal_weight * loss_temporal
            losses["temporal"] = loss_temporal
        if self.lambda_anchor > 0 and ("anchor" in batch or "anchor_x" in batch):
            if "anchor_x" in batch:  # TimeVis: where this visualizer puts the anchor vertex
                anchor = self.autoencoder.encoder(self.normalise(batch["anchor_x"]))
            else:  # DVI: the position under the previous visualizer
                anchor = batch["anchor"]
            loss_anchor = anchor_loss(z, anchor, batch["anchor_weight"], batch.get("counts"))
            total = total + self.lambda_anchor * loss_anchor
            losses["anchor"] = loss_anchor
        losses["total"] = total
        self._check_finite(total, batch_idx)
        n_edges = head_pos.shape[0]
        self.edges_seen += n_edges
        for name, value in losses.items():
            self.log(
                f"{self.log_prefix}/{name}",
                value,
                on_step=True,
                on_epoch=True,
                batch_size=n_edges,
                sync_dist=False,
            )
        # Untagged copy for early stopping and the progress bar; not sent to the logger.
        self.log(
            "loss",
            total,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            logger=False,
            batch_size=n_edges,
            sync_dist=True,
        )
        return total

    def _check_finite(self, total: Tensor, batch_idx: int) -> None:
        """Stop training, naming the subject epoch, when the loss is NaN or infinite."""
        value = float(total.detach())
        if math.isfinite(value):
            self.last_finite_loss = value
            return
        last = "none" if self.last_finite_loss is None else f"{self.last_finite_loss:.6g}"
        raise TrainingDiverged(
            f"{self.log_prefix}: the loss became {value} in subject epoch {self.subject_epoch}, "
            f"visualizer epoch {self.current_epoch + 1}, batch {batch_idx} (last finite loss: "
            f"{last}); nothing was exported for this epoch. Try a lower method.optimizer.lr."
        )

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
