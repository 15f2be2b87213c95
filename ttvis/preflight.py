"""Checks of a composed config and its run folder, made before any work starts.

Nothing here imports torch, Lightning or numba-compiled code until the run folder and the
settings have passed (only the subject-head check, last, needs torch), so ``train.py`` reports a
bad ``content_path`` within a second or two instead of after seconds of imports.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig

from ttvis.config_check import check_config
from ttvis.floats import flush_subnormals
from ttvis.run import RunError, TrainingRun, selected_epochs

log = logging.getLogger(__name__)


def open_run(cfg: DictConfig) -> TrainingRun:
    """Check every setting (:func:`ttvis.config_check.check_config`), then validate
    ``cfg.content_path``, ``cfg.epochs``, ``method.n_neighbors`` and that ``cfg.output_dir`` is
    writable, before any work starts; raises :class:`~ttvis.config_check.ConfigError` or
    :class:`RunError`."""
    check_config(cfg)
    epochs = selected_epochs(cfg.get("epochs"))
    run = TrainingRun(cfg.content_path, epochs=epochs, check_values=cfg.get("check_values", True))
    log.info("%s", run)
    if cfg.method.get("n_neighbors") is not None:
        run.require_training_points(cfg.method.n_neighbors)
    require_writable_dir(cfg.output_dir)
    flush_subnormals()  # before torch computes anything in this process
    if run.is_classification:
        # Fail early and loudly if backgrounds will be white, instead of after training (this
        # one check imports torch).
        from ttvis.subject import try_load_subject_head

        try_load_subject_head(
            run, run.epochs[0], max_linear_residual=cfg.export.max_linear_residual
        )
    return run


def require_writable_dir(path: str | Path) -> Path:
    """Check that folder ``path`` exists and is writable or can be created; return it resolved.

    Nothing is created. Raises :class:`~ttvis.run.RunError` naming the read-only or
    non-folder ancestor and the ``output_dir=`` override that writes elsewhere.
    """
    path = Path(path).expanduser().resolve()
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"cannot write exports to {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunError(
            f"cannot write exports to {path}: {existing} is read-only. ttvis never changes "
            "the run's input files; pass output_dir=/a/writable/folder to export elsewhere"
        )
    return path
