"""Fit visualizers from a composed config: the logic behind ``train.py``."""

from __future__ import annotations

import ctypes
import gc
import logging
import math
import os
import sys
import time
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig

from ttvis.callbacks import encode_points
from ttvis.knn import default_device
from ttvis.preflight import open_run
from ttvis.resume import EpochCheckpoint, ResumeStore, settings_fingerprint
from ttvis.run import TrainingRun
from ttvis.subject import as_linear_head, try_load_subject_head

log = logging.getLogger(__name__)


def release_memory() -> None:
    """Free the last subject epoch's arrays before the next one, so memory does not grow with
    the number of epochs.

    The Trainer, module and datamodule reference each other, so they wait for a garbage
    collection; and glibc keeps freed heap pages (fragmented by plotting and training
    allocations) unless asked to return them, which ``malloc_trim`` does where it exists.
    """
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to trim
            pass


def instantiate_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """Every non-null entry of ``cfg.callbacks``, freshly built (Trainers never share them).

    Progress bars are left out when ``trainer.enable_progress_bar`` is false.
    """
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if cfg.trainer.get("enable_progress_bar", True) is False:
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def instantiate_logger(cfg: DictConfig) -> Logger | bool:
    """The configured logger, or False when ``logger=none``."""
    return instantiate(cfg.logger) if cfg.get("logger") else False


def make_trainer(cfg: DictConfig, logger: Logger | bool, **overrides: Any) -> L.Trainer:
    """A Trainer from ``cfg.trainer`` (plus ``overrides``), fresh callbacks, the shared logger.

    The method's ``gradient_clip_val`` (the gradient's largest norm; null: unclipped) applies
    unless ``trainer.gradient_clip_val`` is set.
    """
    clip = cfg.method.get("gradient_clip_val")
    if clip is not None and cfg.trainer.get("gradient_clip_val") is None:
        overrides.setdefault("gradient_clip_val", clip)
    trainer = instantiate(
        cfg.trainer, callbacks=instantiate_callbacks(cfg), logger=logger, **overrides
    )
    warn_if_cpu_oversubscribed(trainer)
    return trainer


_warned_oversubscribed = False


def warn_if_cpu_oversubscribed(trainer: L.Trainer) -> None:
    """Warn once (rank zero) when ``trainer``'s CPU processes on this machine would run more
    threads than it has cores.

    Lightning gives each of N CPU processes ``cores / N`` threads unless ``OMP_NUM_THREADS`` is
    set, in which case every process takes that many. Past the core count, OpenMP threads wait
    on busy cores at every parallel operation: on two cores, two processes of two threads each
    trained 4x slower per step than one process (docs/results.md).
    """
    global _warned_oversubscribed
    if _warned_oversubscribed or not isinstance(trainer.accelerator, CPUAccelerator):
        return
    try:
        threads = int(os.environ["OMP_NUM_THREADS"])
    except (KeyError, ValueError):  # unset: Lightning shares the cores out itself
        return
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity else (os.cpu_count() or 1)
    if trainer.num_devices * threads > cores and trainer.is_global_zero:
        _warned_oversubscribed = True
        log.warning(
            "trainer.devices=%d CPU processes x OMP_NUM_THREADS=%d threads exceed this "
            "machine's %d cores: every step will wait on busy cores. Set OMP_NUM_THREADS=%d, "
            "or unset it (Lightning then gives each process its share of the cores)",
            trainer.num_devices,
            threads,
            cores,
            max(1, cores // trainer.num_devices),
        )


def head_device(cfg: DictConfig) -> torch.device:
    """Where the subject heads evaluate while a complex is built (the bisections that locate
    decision-boundary crossings): this process's GPU (:func:`ttvis.knn.default_device`) unless
    ``trainer.accelerator`` is ``cpu``. The Trainer then moves them with the module."""
    if str(cfg.trainer.get("accelerator", "auto")).lower() == "cpu":
        return torch.device("cpu")
    return default_device()


def training_head(
    cfg: DictConfig, run: TrainingRun, epoch: int, device: torch.device | None = None
):
    """The subject head for the prediction-preserving loss, the boundary points, the points
    near the decision boundary and the class-separated complex, on ``device`` (None:
    :func:`head_device`), or None when none of them is on or the run has no head."""
    uses = ("lambda_pred", "b_n_epochs", "boundary_mix_fraction", "class_weight")
    if all(cfg.method.get(name, 0) <= 0 for name in uses):
        return None
    return try_load_subject_head(
        run,
        epoch,
        head_device(cfg) if device is None else device,
        max_linear_residual=cfg.export.max_linear_residual,
    )


def warm_fit_epochs(cfg: DictConfig, changed: float) -> int:
    """Visualizer epochs of a warm-started DVI fit, set by how much the neighbourhoods changed.

    The previous visualizer already places the samples whose neighbourhoods held, so a warm
    fit trains ``ceil(warm_max_epochs * changed)`` visualizer epochs: the full length only when
    every sample lost all its neighbours, and at least ``method.warm_min_epochs``.
    ``warm_min_epochs=null`` trains ``warm_max_epochs`` whatever changed; ``warm_max_epochs``
    null means ``trainer.max_epochs``, which also caps it.

    Args:
        cfg: the composed config.
        changed: ``1 - mean_i(kept_share_i)``, the share of k-NN lost since the previous subject
            epoch, in 0..1.
    """
    epochs = cfg.trainer.max_epochs
    if cfg.method.get("warm_max_epochs"):
        epochs = min(cfg.method.warm_max_epochs, epochs)
    least = cfg.method.get("warm_min_epochs")
    if least is not None:
        need = math.ceil(epochs * min(max(changed, 0.0), 1.0) - 1e-9)
        epochs = min(epochs, max(int(least), need))
    return int(epochs)


def warm_fit(cfg: DictConfig, changed: float = 1.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a warm-started DVI fit (every subject epoch after the first) changes.

    Args:
        cfg: the composed config.
        changed: the share of k-NN lost since the previous subject epoch
            (:func:`warm_fit_epochs`).

    Returns:
        ``(module_overrides, trainer_overrides)``: ``{"scheduler": ...}`` from
        ``method.warm_scheduler`` (when not null), ``{"lr_ramp_epochs": ...}`` from
        ``method.warm_ramp_epochs`` (when set) and ``{"max_epochs": ...}``, the fit's length
        from :func:`warm_fit_epochs` (when it differs from ``trainer.max_epochs``). A warm
        scheduler's null ``T_max`` becomes the fit's length in visualizer epochs.
    """
    module_overrides: dict[str, Any] = {}
    if cfg.method.get("warm_ramp_epochs"):
        module_overrides["lr_ramp_epochs"] = float(cfg.method.warm_ramp_epochs)
    trainer_overrides: dict[str, Any] = {}
    epochs = warm_fit_epochs(cfg, changed)
    if epochs != cfg.trainer.max_epochs:
        trainer_overrides["max_epochs"] = epochs
    scheduler = cfg.method.get("warm_scheduler")
    if scheduler is not None:
        length = {"T_max": epochs} if scheduler.get("T_max", 0) is None else {}
        module_overrides["scheduler"] = instantiate(scheduler, **length)
    return module_overrides, trainer_overrides


def callback_seconds(trainer: L.Trainer) -> dict[str, float]:
    """Seconds each timed callback of ``trainer`` spent, by class name (``ExportCallback``:
    the exports, ``PlotCallback``: the pictures)."""
    return {type(cb).__name__: cb.seconds for cb in trainer.callbacks if hasattr(cb, "seconds")}


def fit_dvi(cfg: DictConfig, run: TrainingRun, logger: Logger | bool) -> dict[str, Any]:
    """DVI: one visualizer per subject epoch, each warm-started from the previous (§4).

    Returns:
        ``{"epochs": {e: final mean loss}, "draws_per_point": {e: edges drawn per training
        point}, "edges": edges trained on by this process,
        "seconds": {"complex": .., "train": .., "export": ..}, "per_epoch": {e: {"complex",
        "train", "callbacks" (:func:`callback_seconds`), "edges", "draws_per_epoch"}},
        "resumed": epochs not retrained}`` (seconds; ``draws_per_epoch``: edge draws per
        visualizer epoch over all processes).
    """
    summary: dict[str, Any] = {
        "epochs": {},
        "draws_per_point": {},
        "edges": 0,
        "seconds": {"complex": 0.0, "train": 0.0, "export": 0.0},
        "per_epoch": {},
    }
    store = ResumeStore(cfg.output_dir, run, settings_fingerprint(cfg))
    done, previous = resume_point(cfg, store)
    summary["resumed"] = done
    for k, epoch in enumerate(run.epochs, start=1):
        if epoch in done:
            continue
        progress = f"{k}/{len(run.epochs)}"
        previous = fit_dvi_epoch(cfg, run, logger, epoch, progress, previous, store, summary)
        release_memory()
    return summary


def resume_point(cfg: DictConfig, store: ResumeStore) -> tuple[list[int], EpochCheckpoint | None]:
    """The leading epochs already exported with these settings (none with ``resume=false``)
    and the last one's checkpoint, which the next fit starts from (None: a cold start)."""
    if not cfg.get("resume", True):
        return [], None
    done, last = store.completed()
    if last is not None:
        log.info(
            "Resuming: epochs %s are already exported in %s with these settings; "
            "not retraining them (resume=false retrains everything)",
            done,
            cfg.output_dir,
        )
    return done, last


def fit_dvi_epoch(
    cfg: DictConfig,
    run: TrainingRun,
    logger: Logger | bool,
    epoch: int,
    progress: str,
    previous: EpochCheckpoint | None,
    store: ResumeStore,
    summary: dict[str, Any],
) -> EpochCheckpoint:
    """Build subject epoch ``epoch``'s complex, fit and export its visualizer (warm-started
    from ``previous`` when there is one), add its figures to ``summary`` and return what the
    next epoch starts from, also saved in ``store`` (by global rank zero, after the exports:
    a checkpoint means the epoch is done). ``progress``: ``k/E`` in the log lines."""
    t0 = time.perf_counter()
    head = training_head(cfg, run, epoch)
    datamodule = instantiate(cfg.method.datamodule)(
        run=run,
        epoch=epoch,
        prev_knn=previous.knn if previous is not None else None,
        prev_positions=previous.positions if previous is not None else None,
        subject_head=head,
    )
    datamodule.build()
    t1 = time.perf_counter()
    module, trainer_overrides = dvi_module(cfg, datamodule, epoch, head, previous, progress)
    trainer = make_trainer(cfg, logger, **trainer_overrides)
    trainer.fit(module, datamodule=datamodule)
    t2 = time.perf_counter()
    record_dvi_fit(summary, epoch, progress, trainer, module, datamodule, (t0, t1, t2))
    state = {n: p.detach().clone() for n, p in module.autoencoder.state_dict().items()}
    positions = encode_points(module, datamodule.train_reps, cfg.export.batch_size)
    checkpoint = EpochCheckpoint(state, datamodule.knn, positions)
    if trainer.is_global_zero:
        store.save(epoch, checkpoint)
    return checkpoint


def dvi_module(
    cfg: DictConfig,
    datamodule: L.LightningDataModule,
    epoch: int,
    head,
    previous: EpochCheckpoint | None,
    progress: str,
) -> tuple[L.LightningModule, dict[str, Any]]:
    """Subject epoch ``epoch``'s visualizer module, warm-started from ``previous`` (when there
    is one, with the temporal weight ``lambda2`` times the share of k-NN kept), and the
    Trainer overrides of its fit (:func:`warm_fit`)."""
    shift, scale = datamodule.input_normalisation()
    module_overrides, trainer_overrides = ({}, {})
    if previous is not None:
        module_overrides, trainer_overrides = warm_fit(cfg, 1 - datamodule.mean_kept_share)
    module = instantiate(cfg.method.module)(
        subject_epoch=epoch,
        log_prefix=f"{cfg.vis_name}/epoch_{epoch}",
        input_shift=shift,
        input_scale=scale,
        subject_head=head,
        **module_overrides,
    )
    if previous is not None:
        weight = cfg.method.lambda2 * datamodule.mean_kept_share
        module.warm_start(previous.state, temporal_weight=weight)
        log.info(
            "epoch %d (%s): warm start, %.1f%% of k-NN kept, temporal weight %.3g",
            epoch,
            progress,
            100 * datamodule.mean_kept_share,
            weight,
        )
    return module, trainer_overrides


def record_dvi_fit(
    summary: dict[str, Any],
    epoch: int,
    progress: str,
    trainer: L.Trainer,
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    times: tuple[float, float, float],
) -> None:
    """Add one subject epoch's fit to :func:`fit_dvi`'s ``summary`` and log it; ``times``:
    ``perf_counter()`` at the start, after the complex and after the fit (and exports)."""
    t0, t1, t2 = times
    loss = trainer.callback_metrics.get("loss")
    summary["epochs"][epoch] = float(loss) if loss is not None else None
    draws = module.edges_seen * trainer.world_size / datamodule.train_reps.shape[0]
    summary["draws_per_point"][epoch] = draws
    log.info(
        "epoch %d (%s): %d visualizer epochs, %.0f edge draws per training point, final "
        "loss %.4f, %.1fs",
        epoch,
        progress,
        trainer.current_epoch,
        draws,
        summary["epochs"][epoch] or float("nan"),
        t2 - t1,
    )
    callbacks = callback_seconds(trainer)
    export_seconds = sum(callbacks.values())
    summary["seconds"]["complex"] += t1 - t0
    summary["seconds"]["train"] += t2 - t1 - export_seconds
    summary["seconds"]["export"] += export_seconds
    summary["edges"] += module.edges_seen
    summary["per_epoch"][epoch] = {
        "complex": t1 - t0,
        "train": t2 - t1 - export_seconds,
        "callbacks": callbacks,
        "edges": module.edges_seen,
        "draws_per_epoch": datamodule.n_edges,
    }


def train(cfg: DictConfig, run: TrainingRun | None = None) -> dict[str, Any]:
    """Validate the run (unless ``run`` is the one :func:`~ttvis.preflight.open_run` already
    returned for ``cfg``), fit the configured method, export; return a summary dict."""
    if run is None:
        run = open_run(cfg)
    # Seeded after validation, whatever it drew (building a subject head initialises a model):
    # train(cfg) and train.py's open_run-then-train start the fit from the same random state.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    logger = instantiate_logger(cfg)
    fit = instantiate(cfg.method.fit)
    start = time.perf_counter()
    summary = fit(cfg=cfg, run=run, logger=logger)
    summary["seconds"]["total"] = time.perf_counter() - start
    summary["output_dir"] = str(cfg.output_dir)
    sec = summary["seconds"]
    log.info(
        "Done in %.1fs: complex %.1fs, training %.1fs (%.0f edges/s per process), export %.1fs. "
        "Exports in %s",
        sec["total"],
        sec["complex"],
        sec["train"],
        summary["edges"] / max(sec["train"], 1e-9),
        sec["export"],
        cfg.output_dir,
    )
    return summary


def epoch_heads(cfg: DictConfig, run: TrainingRun):
    """Every epoch's subject head as one :class:`EpochHeads`, or None when the prediction loss
    is off or some epoch has no head. Affine model heads become :class:`LinearHead` s
    (:func:`~ttvis.subject.as_linear_head`), so all-affine heads run as one stacked product."""
    from ttvis.modules import EpochHeads

    # Loaded on the CPU and made linear there: E full subject models are never on a GPU at once.
    cpu, device = torch.device("cpu"), head_device(cfg)
    heads = [training_head(cfg, run, epoch, cpu) for epoch in run.epochs]
    if not heads or any(h is None for h in heads):
        return None
    heads = [
        as_linear_head(head, run.representations(epoch), seed=cfg.seed).to(device)
        for head, epoch in zip(heads, run.epochs, strict=True)
    ]
    scales = []
    for epoch in run.epochs:
        logits = run.predictions(epoch)
        spread = float(np.asarray(logits[run.train_index]).std()) if logits is not None else 1.0
        scales.append(spread if spread > 0 else 1.0)
    every_epoch = EpochHeads(heads, scales)
    how = "one stacked product" if every_epoch.stacked else "applied epoch by epoch"
    log.info("subject heads of %d epochs: %s", len(heads), how)
    return every_epoch


def timevis_datamodule(cfg: DictConfig, run: TrainingRun):
    """``(datamodule, heads)``: TimeVis's datamodule for ``run`` (temporal anchors when
    ``method.lambda_anchor`` is on), not yet built, and every epoch's :class:`EpochHeads`
    (:func:`epoch_heads`; None without)."""
    heads = epoch_heads(cfg, run)
    datamodule = instantiate(cfg.method.datamodule)(
        run=run,
        anchors=bool(cfg.method.get("lambda_anchor", 0)),
        subject_heads=None if heads is None else list(heads.heads),
    )
    return datamodule, heads


def fit_timevis(cfg: DictConfig, run: TrainingRun, logger: Logger | bool) -> dict[str, Any]:
    """TimeVis: one visualizer for every epoch, trained on the spatio-temporal complex (§5).

    Returns:
        The same summary as :func:`fit_dvi` without ``per_epoch``; ``epochs`` maps every
        exported epoch to the one model's final mean loss; ``callbacks``, ``draws_per_epoch``
        and ``vertices`` (of the spatio-temporal complex) describe the one fit.
    """
    t0 = time.perf_counter()
    datamodule, heads = timevis_datamodule(cfg, run)
    datamodule.build()
    t1 = time.perf_counter()
    shift, scale = datamodule.input_normalisation()  # per epoch: [E, D] and [E]
    module = instantiate(cfg.method.module)(
        subject_epoch=1,
        log_prefix=f"{cfg.vis_name}",
        input_shift=shift,
        input_scale=scale,
        subject_head=heads,
    )
    overrides = {}
    if cfg.method.get("max_epochs"):
        overrides["max_epochs"] = int(cfg.method.max_epochs)
    trainer = make_trainer(cfg, logger, **overrides)
    trainer.fit(module, datamodule=datamodule)
    t2 = time.perf_counter()
    loss = trainer.callback_metrics.get("loss")
    loss = float(loss) if loss is not None else None
    callbacks = callback_seconds(trainer)
    export_seconds = sum(callbacks.values())
    log.info(
        "TimeVis: %d visualizer epochs over %d subject epochs, final loss %.4f, %.1fs",
        trainer.current_epoch,
        len(run.epochs),
        loss if loss is not None else float("nan"),
        t2 - t1,
    )
    return {
        "epochs": dict.fromkeys(run.epochs, loss),
        "edges": module.edges_seen,
        "seconds": {
            "complex": t1 - t0,
            "train": t2 - t1 - export_seconds,
            "export": export_seconds,
        },
        "callbacks": callbacks,
        "draws_per_epoch": datamodule.n_edges,
        "vertices": datamodule.layout.n_vertices,
    }
