"""Lightning callbacks: per-subject-epoch exports, and progress that names the subject epoch: a
bar on a terminal, one log line per visualizer epoch in a log file."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

from ttvis.export import (
    atomic_save_npy,
    atomic_save_png,
    atomic_torch_save,
    class_palette,
    export_paths,
    projection_scale,
    render_background,
)
from ttvis.inference import batched
from ttvis.modules.visualizer import TrainingDiverged
from ttvis.subject import try_load_subject_head

log = logging.getLogger(__name__)


def encode_points(module: L.LightningModule, reps: np.ndarray, batch_size: int) -> np.ndarray:
    """Encode ``reps [M, D]`` (possibly memory-mapped) in batches on the module's device
    (:func:`ttvis.inference.batched`) -> ``[M, 2]`` float32."""
    return batched(
        lambda chunk: module.encode(chunk).cpu(), reps, batch_size, module.device
    ).numpy()


class ExportCallback(L.Callback):
    """At the end of each fit, write the subject epoch's projection, scale, background and model.

    Files (docs/design.md §2), under ``{out_dir}``, each written atomically by global rank zero::

        projection/{epoch}.npy   float32 [N*F, 2], every sample in original order
        scale/{epoch}.npy        float32 [4]: x_min, y_min, x_max, y_max
        bgimg/{epoch}.png        resolution x resolution decision regions
        vismodel/{epoch}.pth     the visualizer as it serves that epoch

    The datamodule tells which run and epochs (``trainer.datamodule.run`` and
    ``.export_epochs``); the module provides ``select_epoch``, ``encode``, ``decode`` and
    ``export_state``.

    Args:
        out_dir: the export folder, ``content_path/visualize/{VIS_NAME}``.
        resolution: background image side in pixels.
        scale_margin: growth of the projection's box on each side, as a share of its extent.
        batch_size: points per encoder/decoder call during export.
        boundary_gap: top-1 minus top-2 probability below which a pixel is boundary.
        boundary_strength: colour strength of boundary pixels (0 white, 1 full).
        min_strength: colour strength just above the boundary gap.
        max_linear_residual: largest residual accepted for a least-squares linear subject head.
    """

    def __init__(
        self,
        out_dir: str | Path,
        resolution: int = 300,
        scale_margin: float = 0.1,
        batch_size: int = 90000,
        boundary_gap: float = 0.15,
        boundary_strength: float = 0.1,
        min_strength: float = 0.3,
        max_linear_residual: float = 1e-3,
    ) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.resolution = resolution
        self.scale_margin = scale_margin
        self.batch_size = batch_size
        self.colour_kwargs = {
            "boundary_gap": boundary_gap,
            "boundary_strength": boundary_strength,
            "min_strength": min_strength,
        }
        self.max_linear_residual = max_linear_residual
        self.seconds = 0.0  # time spent exporting, for benchmark reports

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        start = time.perf_counter()
        was_training = pl_module.training
        # Lightning's teardown has moved the module to the CPU; encode and draw where it trained.
        parked = pl_module.device
        try:
            pl_module.to(trainer.strategy.root_device).eval()
            for epoch in dm.export_epochs:
                pl_module.select_epoch(dm.run.epochs.index(epoch))
                self.export_epoch(dm.run, epoch, pl_module)
                atomic_torch_save(
                    export_paths(self.out_dir, epoch)["vismodel"], pl_module.export_state()
                )
        finally:
            pl_module.to(parked).train(was_training)
            self.seconds += time.perf_counter() - start

    def export_epoch(self, run, epoch: int, module: L.LightningModule) -> None:
        """Write projection, scale and background of one subject epoch."""
        start = time.perf_counter()
        device = module.device
        projection = encode_points(module, run.representations(epoch), self.batch_size)
        if not np.isfinite(projection).all():
            raise TrainingDiverged(
                f"epoch {epoch}: the visualizer produced non-finite positions; nothing exported"
            )
        scale = projection_scale(projection, self.scale_margin)
        head = try_load_subject_head(
            run, epoch, device, max_linear_residual=self.max_linear_residual
        )
        palette = class_palette(run.n_classes) if head is not None else None
        image = render_background(
            module.decode,
            head.predict if head is not None else None,
            scale,
            self.resolution,
            palette,
            batch_size=self.batch_size,
            device=device,
            **self.colour_kwargs,
        )
        paths = export_paths(self.out_dir, epoch)
        atomic_save_npy(paths["projection"], projection)
        atomic_save_npy(paths["scale"], scale)
        atomic_save_png(paths["bgimg"], image)
        log.info(
            "epoch %d: exported projection %s, scale and %dx%d background to %s (%.1fs)",
            epoch,
            projection.shape,
            self.resolution,
            self.resolution,
            self.out_dir,
            time.perf_counter() - start,
        )


class SubjectEpochProgressBar(TQDMProgressBar):
    """TQDM bar whose description reads ``DVI epoch 5 (3/10) · vis epoch 2``."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args, **kwargs) -> None:
        super().on_train_epoch_start(trainer, *args, **kwargs)
        dm = trainer.datamodule
        label = getattr(dm, "progress_label", "visualizer")
        self.train_progress_bar.set_description(f"{label} · vis epoch {trainer.current_epoch + 1}")


class EpochLogProgress(ProgressBar):
    """Progress for output that is not a terminal (a log file, CI, ``nohup``, a cluster job):
    one line per visualizer epoch, ``DVI epoch 5 (3/10) · vis epoch 2/20: loss 1.2345 (3.1s)``,
    instead of a bar redrawn at every step.

    A visualizer epoch's loss is logged by the module after the callbacks' end-of-epoch hooks,
    so each line is written when the next epoch starts, or when training ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._pending: tuple[int, float] | None = None  # (finished epoch, its seconds)
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)
        self._epoch_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = (trainer.current_epoch + 1, time.perf_counter() - self._epoch_start)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: L.Trainer) -> None:
        """Log the finished visualizer epoch's line, if one is waiting."""
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        if not self._enabled:
            return
        label = getattr(trainer.datamodule, "progress_label", "visualizer")
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        loss = trainer.progress_bar_metrics.get("loss")
        log.info(
            "%s · vis epoch %s: loss %s (%.1fs)",
            label,
            f"{epoch}/{total}" if total else epoch,
            "n/a" if loss is None else f"{float(loss):.4f}",
            seconds,
        )


def progress_bar(stream=None) -> ProgressBar:
    """The progress display (``callbacks.progress_bar``): :class:`SubjectEpochProgressBar` when
    ``stream`` (default: stderr, where the bar draws) is a terminal, else
    :class:`EpochLogProgress`, one log line per visualizer epoch."""
    stream = sys.stderr if stream is None else stream
    is_terminal = getattr(stream, "isatty", None)
    return (
        SubjectEpochProgressBar()
        if is_terminal is not None and is_terminal()
        else EpochLogProgress()
    )
