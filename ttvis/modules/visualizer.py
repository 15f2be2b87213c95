"""The visualizer LightningModule: trains an :class:`Autoencoder` on streamed complex edges."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import Tensor, nn

from ttvis.modules.autoencoder import Autoencoder
from ttvis.modules.losses import (
    prediction_loss,
    reconstruction_loss,
    temporal_loss,
    umap_ab,
    umap_loss,
)


class VisualizerModule(L.LightningModule):
    """Parametric UMAP + reconstruction (+ temporal anchor) for one visualizer.

    A batch, as the edge streams yield it, holds the distinct vertices of ``B`` edges once:
    ``x [U, D]``, ``head_pos [B]`` and ``tail_pos [B]`` (rows of ``x``), and ``counts [U]``.

    Args:
        encoder_dims: ``[D, ..., 2]``.
        decoder_dims: ``[2, ..., D]``.
        optimizer: partial optimizer factory (``_partial_: true`` in config).
        scheduler: partial LR-scheduler factory, stepped once per visualizer epoch, or None.
        lambda1: weight of the reconstruction loss.
        lambda_pred: weight of the prediction-preserving loss (needs ``subject_head``).
        recon_scale: the reconstruction error is divided by this (the representations' mean
            per-dimension variance), so ``lambda1`` means the same for any feature scale.
        subject_head: frozen classifier head ``[B, D] -> [B, C]``, or None.
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
        recon_scale: float = 1.0,
        subject_head: nn.Module | None = None,
        negative_sample_rate: int = 5,
        spread: float = 1.0,
        min_dist: float = 0.1,
        repulsion_strength: float = 1.0,
        subject_epoch: int = 1,
        log_prefix: str = "visualizer",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "subject_head"])
        self.autoencoder = Autoencoder(list(encoder_dims), list(decoder_dims))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.lambda1 = lambda1
        self.lambda_pred = lambda_pred if subject_head is not None else 0.0
        self.recon_scale = float(recon_scale) if recon_scale > 0 else 1.0
        self.subject_head = subject_head
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

    # ------------------------------------------------------------------ inference API
    def encode(self, x: Tensor) -> Tensor:
        """Representations ``[B, D]`` -> 2-D positions ``[B, 2]``."""
        return self.autoencoder.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """2-D positions ``[B, 2]`` -> representations ``[B, D]``."""
        return self.autoencoder.decoder(z)

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
        x = batch["x"]
        z, x_hat = self.autoencoder(x)
        loss_umap = umap_loss(
            z[batch["head_pos"]],
            z[batch["tail_pos"]],
            self.a,
            self.b,
            negative_sample_rate=self.negative_sample_rate,
            repulsion_strength=self.repulsion_strength,
            generator=self._generator,
        )
        loss_recon = reconstruction_loss(x, x_hat, batch.get("counts")) / self.recon_scale
        total = loss_umap + self.lambda1 * loss_recon
        losses = {"umap": loss_umap, "recon": loss_recon}
        if self.lambda_pred > 0:
            with torch.no_grad():
                target = self.subject_head(x)
            loss_pred = prediction_loss(target, self.subject_head(x_hat), batch.get("counts"))
            total = total + self.lambda_pred * loss_pred
            losses["pred"] = loss_pred
        if self.temporal_weight > 0 and self._anchors:
            loss_temporal = temporal_loss(list(self.autoencoder.parameters()), self._anchors)
            total = total + self.temporal_weight * loss_temporal
            losses["temporal"] = loss_temporal
        losses["total"] = total
        n_edges = batch["head_pos"].shape[0]
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

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.autoencoder.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
