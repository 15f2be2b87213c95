"""Lightning callback that draws the pictures of each fit's exports (ttvis/plot.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from ttvis.animation import write_animation
from ttvis.export import epochs_with_projection
from ttvis.export_folder import ExportError
from ttvis.plot import (
    PlotSettings,
    PlotSubject,
    draw_epochs,
)

log = logging.getLogger(__name__)


class PlotCallback(L.Callback):
    """After each fit, draw ``plots/{epoch}.png`` for the epochs just exported.

    Runs in ``teardown`` of the fit, after every callback's ``on_fit_end`` (where
    :class:`ttvis.callbacks.ExportCallback` writes the files), whatever the callbacks' order,
    and only on global rank zero. It reads the files just written (projection, scale,
    background) and the run's saved logits; no subject model or visualizer is loaded. Each
    figure is also logged to every TensorBoard logger of the trainer as the image
    ``{vis_name}/plot`` at step = subject epoch. When the fit exported the run's last epoch,
    ``plots/run.gif`` is rebuilt from every exported epoch of the run. A missing or broken
    export file only costs the pictures (a warning), never the run.

    Args:
        out_dir: the export folder, ``content_path/visualize/{VIS_NAME}``.
        vis_name: the name shown in titles and the TensorBoard tag.
        enabled: False turns the callback into a no-op (``export.plots=false``).
        settings: the ``plots`` config block (see ``conf/plots/default.yaml``).
    """

    def __init__(
        self,
        out_dir: str | Path,
        vis_name: str,
        enabled: bool = True,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.out_dir = Path(out_dir)
        self.vis_name = str(vis_name)
        self.enabled = bool(enabled)
        self.settings = PlotSettings.from_mapping(settings)
        self.seconds = 0.0  # time spent drawing, counted with the export time in summaries

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not self.enabled or not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        run = getattr(dm, "run", None)
        epochs = list(getattr(dm, "export_epochs", []) or [])
        if run is None or not epochs:
            return
        start = time.perf_counter()
        try:
            self._draw(trainer, run, epochs)
        except (ExportError, OSError) as err:  # pictures never cost a run its exports
            log.warning(
                "plots: not drawn (%s); python -m ttvis.plot redraws them from the exports", err
            )
        finally:
            self.seconds += time.perf_counter() - start

    def _draw(self, trainer: L.Trainer, run, epochs: list[int]) -> None:
        """Plots of ``epochs``, their TensorBoard images and, after the last epoch, the GIF."""
        ready = epochs_with_projection(self.out_dir, epochs)
        if len(ready) < len(epochs):
            log.warning(
                "plots: no projection under %s for epoch(s) %s; not drawn",
                self.out_dir,
                sorted(set(epochs) - set(ready)),
            )
        subject = PlotSubject.from_run(run)
        images = draw_epochs(run, self.out_dir, ready, self.settings, self.vis_name, subject)
        for tb in (lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)):
            for epoch, image in images.items():
                tb.experiment.add_image(
                    f"{self.vis_name}/plot", image, global_step=epoch, dataformats="HWC"
                )
            tb.experiment.flush()
        if max(epochs) >= max(run.epochs):  # the run's last epoch is exported: animate
            every = epochs_with_projection(self.out_dir, run.epochs)
            write_animation(run, self.out_dir, every, self.settings, self.vis_name, subject)
