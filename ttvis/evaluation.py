"""Evaluate one visualizer's exports: every metric of docs/design.md §7, epoch by epoch.

:func:`evaluate_visualization` reads an :class:`~ttvis.export_folder.ExportFolder` and the run
it belongs to, and returns the JSON-serialisable results ``evaluate.py`` prints, writes as
``metrics.json`` and logs (:mod:`ttvis.metrics_report`). The metrics themselves are the pure
functions of :mod:`ttvis.metrics`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ttvis.boundary import boundary_points
from ttvis.complex import KNNGraph, neighbour_overlap
from ttvis.export_folder import ExportError, ExportFolder
from ttvis.inference import batched
from ttvis.metrics import (
    EXACT_BELOW,
    PER_EPOCH_KEYS,
    TemporalTracker,
    boundary_preserving,
    inverse_confidence_drop,
    knn_indices,
    prediction_preserving,
)
from ttvis.metrics_report import format_row
from ttvis.run import TrainingRun
from ttvis.subject import try_load_subject_head

log = logging.getLogger(__name__)

__all__ = ["EvaluationError", "EvaluationSettings", "evaluate_visualization"]


class EvaluationError(ExportError):
    """A visualizer cannot be evaluated: exports missing, unreadable or inconsistent, or a
    setting the run cannot meet."""


@dataclass(frozen=True)
class EvaluationSettings:
    """How :func:`evaluate_visualization` measures (``conf/evaluate.yaml``).

    Attributes:
        k: neighbours per point for neighbour and temporal preserving.
        device: where the visualizer and the subject head evaluate.
        batch_size: points per visualizer/head call.
        max_linear_residual: accepted residual of a least-squares linear subject head.
        exact_below: see :func:`ttvis.metrics.knn_indices`.
        boundary_fraction, boundary_delta, boundary_steps: the boundary points of boundary
            preserving: this share of the training points' differently-predicted neighbour
            pairs, bisected ``boundary_steps`` times, gap below ``boundary_delta``.
        seed: chooses the pairs, so repeated evaluations agree.
    """

    k: int = 15
    device: str = "cpu"
    batch_size: int = 65536
    max_linear_residual: float = 1e-3
    exact_below: int = EXACT_BELOW
    boundary_fraction: float = 0.1
    boundary_delta: float = 0.1
    boundary_steps: int = 12
    seed: int = 0


def encode(model, x: np.ndarray, batch_size: int, device: torch.device | str) -> np.ndarray:
    """``f(x)`` for ``x [M, D]``, ``M >= 1`` -> ``[M, 2]`` float64 array."""
    return batched(model.encoder, x, batch_size, device).cpu().numpy().astype(np.float64)


def reconstruct(model, x: np.ndarray, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """``g(f(x))`` for ``x [M, D]`` -> ``[M, D]`` float32 tensor on ``device``."""
    if x.shape[0] == 0:
        return torch.zeros(0, x.shape[1], device=device)
    return batched(lambda c: model(c)[1], x, batch_size, device)


def evaluate_visualization(
    run: TrainingRun, folder: ExportFolder | str, **settings: Any
) -> dict[str, Any]:
    """Every §7 metric for the exported epochs of one visualizer.

    Per epoch only that epoch's representations are read (memory-mapped, one epoch at a
    time); across epochs only k-NN lists, positions and per-pair rates are kept.

    Args:
        run: the validated run.
        folder: the export folder, or a name under ``content_path/visualize/``.
        settings: :class:`EvaluationSettings` fields.

    Returns:
        A JSON-serialisable dict::

            {"vis", "k", "content_path", "n_train", "n_test",
             "epochs": {"1": {"nn_train", "nn_test", "bp_train", "bp_test", "ppr_train",
                              "ppr_test", "icd_train", "icd_test"}, ...},
             "temporal_train", "temporal_test"}

        ``nn_*`` and ``bp_*`` are mean intersection sizes (0..k), ``ppr_*`` fractions,
        ``icd_*`` probability differences. Values that do not apply (no test samples, no
        subject head, fewer than k boundary points, fewer than 3 epochs for temporal
        preserving) are None.

    Raises:
        ExportError: no exported epoch, or a broken/missing export file.
        EvaluationError: ``k`` not below the number of training points.
    """
    if isinstance(folder, str):
        folder = ExportFolder.of(run.content_path, folder)
    opts = EvaluationSettings(**settings)
    epochs = folder.require_epochs(run.epochs)
    n_train, n_test = run.train_points.size, run.test_points.size
    if opts.k < 1 or n_train <= opts.k:
        raise EvaluationError(
            f"k={opts.k}: expected 1 <= k < number of training points ({n_train})"
        )
    trackers = {"train": TemporalTracker(), "test": TemporalTracker()}
    per_epoch = {}
    for epoch in epochs:
        per_epoch[str(epoch)] = _evaluate_epoch(run, folder, epoch, opts, trackers)
        log.info("%s epoch %d: %s", folder.name, epoch, format_row(per_epoch[str(epoch)]))
    return {
        "vis": folder.name,
        "k": int(opts.k),
        "content_path": str(run.content_path),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "epochs": per_epoch,
        "temporal_train": _finite_or_none(trackers["train"].value()),
        "temporal_test": _finite_or_none(trackers["test"].value()) if n_test else None,
    }


def _evaluate_epoch(
    run: TrainingRun,
    folder: ExportFolder,
    epoch: int,
    opts: EvaluationSettings,
    trackers: dict[str, TemporalTracker],
) -> dict[str, float | None]:
    """One epoch's row of :data:`~ttvis.metrics.PER_EPOCH_KEYS`; feeds ``trackers``."""
    k, exact_below = opts.k, opts.exact_below
    n_train, n_test = run.train_points.size, run.test_points.size
    union = np.concatenate([run.train_points, run.test_points])
    model = folder.visualizer(epoch, opts.device)
    high = np.asarray(run.representations(epoch)[union], dtype=np.float32)
    low = folder.projection(epoch, run.shape.n_points)[union]
    row: dict[str, float | None] = dict.fromkeys(PER_EPOCH_KEYS)

    knn_high_train = knn_indices(high[:n_train], k, exact_below=exact_below)
    knn_low = knn_indices(low[:n_train], k, exact_below=exact_below)
    row["nn_train"] = float(neighbour_overlap(knn_high_train, knn_low).mean())
    trackers["train"].add(knn_high_train, low[:n_train])
    if n_test:
        test_rows = np.arange(n_train, n_train + n_test)
        knn_high = knn_indices(high, k, test_rows, exact_below)
        knn_low = knn_indices(low, k, test_rows, exact_below)
        row["nn_test"] = float(neighbour_overlap(knn_high, knn_low).mean())
        trackers["test"].add(knn_high, low[n_train:])

    head = try_load_subject_head(
        run, epoch, opts.device, max_linear_residual=opts.max_linear_residual
    )
    if head is not None:
        row.update(_head_metrics(model, head, high, low, knn_high_train, n_train, opts))
    return row


def _head_metrics(model, head, high, low, knn_high_train, n_train, opts) -> dict[str, float]:
    """Boundary preserving, prediction preserving and inverse confidence drop, train and test.

    Args:
        model: the epoch's visualizer; head: its subject head.
        high: ``[N_train + N_test, D]`` representations; low: ``[same, 2]`` positions.
        knn_high_train: ``[N_train, k]`` high-dimensional k-NN of the training rows.
        n_train: training rows lead ``high`` and ``low``.
        opts: the settings.
    """
    k, batch_size, device = opts.k, opts.batch_size, opts.device
    boundary = boundary_points(
        high[:n_train],
        KNNGraph(knn_high_train, np.zeros(knn_high_train.shape, np.float32)),
        head,
        max(1, int(round(opts.boundary_fraction * n_train))),
        delta=opts.boundary_delta,
        n_steps=opts.boundary_steps,
        seed=opts.seed,
    )
    boundary_low = encode(model, boundary, batch_size, device) if boundary.shape[0] >= k else None
    out: dict[str, float] = {}
    for part, rows in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        x = high[rows]
        if x.shape[0] == 0:
            continue
        if boundary_low is not None:
            kept = boundary_preserving(x, low[rows], boundary, boundary_low, k, opts.exact_below)
            out[f"bp_{part}"] = float(kept.mean())
        recon = reconstruct(model, x, batch_size, device)
        logits_x = head.predict(torch.from_numpy(x), batch_size)
        logits_recon = head.predict(recon, batch_size)
        out[f"ppr_{part}"] = prediction_preserving(logits_x, logits_recon)
        out[f"icd_{part}"] = inverse_confidence_drop(logits_x, logits_recon)
    return out


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
