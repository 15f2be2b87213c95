"""What the viewer shows, read and checked before anything is written (docs/design.md §11).

:func:`collect_view_data` reads the run (labels, logits, split, class names) and every named
export folder (projections, scales, backgrounds, ``metrics.json``) for the epochs they all
have, and derives what the page would otherwise compute on every load: each sample's
prediction and confidence per epoch, the subject's train/test accuracy per epoch, and the
samples whose prediction flips most often or whose 2-D position moves most. Every missing or
broken file is a :class:`~ttvis.run.RunError` or :class:`~ttvis.export_folder.ExportError`
naming it, raised before the viewer's folder is touched.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttvis.export import class_palette
from ttvis.export_folder import ExportError, ExportFolder
from ttvis.plot import accuracy
from ttvis.run import LABELS_FILE, RunError, TrainingRun

__all__ = ["SPLIT_CODES", "ViewData", "VisData", "collect_view_data"]

# Codes of ViewData.split: a sample listed under index.json's "train", its "test", or neither.
SPLIT_CODES = {"train": 0, "test": 1, "other": 2}


@dataclass
class VisData:
    """One export folder as the viewer shows it (P = N * F points).

    Attributes:
        name: the visualizer's name (the folder's).
        positions: epoch -> float32 ``[P, 2]`` exported 2-D positions.
        scales: epoch -> float64 ``[4]`` ``x_min, y_min, x_max, y_max`` of the background.
        backgrounds: epoch -> the exported ``bgimg/{epoch}.png``.
        metrics: epoch (as a string) -> ``metrics.json``'s row, or None without the file.
        moves: ``(sample, distance)`` of the samples that move most, distance in box widths
            (each epoch's position divided by its scale box's side), summed over epochs.
    """

    name: str
    positions: dict[int, np.ndarray] = field(default_factory=dict)
    scales: dict[int, np.ndarray] = field(default_factory=dict)
    backgrounds: dict[int, Path] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] | None = None
    moves: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class ViewData:
    """Everything the page needs (N samples, F points per sample, E epochs).

    Attributes:
        content_path: the run folder.
        epochs: the E epochs shown, ascending.
        classes: C class names.
        palette: C colours as ``#rrggbb`` (the pictures' palette, ttvis.export.class_palette).
        n_features: F.
        labels: uint8 (C <= 256) or uint16 ``[N]`` class labels.
        split: uint8 ``[N]``, :data:`SPLIT_CODES`.
        predictions: epoch -> ``[N]`` argmax of the logits, the labels' dtype.
        confidence: epoch -> float32 ``[N]`` softmax maximum, in (0, 1].
        accuracy: epoch -> ``{"train": share, "test": share or None}``.
        flips: ``(sample, count)`` of the samples whose prediction changes most often between
            consecutive shown epochs.
        visualizers: one :class:`VisData` per export folder, in the order named.
    """

    content_path: Path
    epochs: list[int]
    classes: list[str]
    palette: list[str]
    n_features: int
    labels: np.ndarray
    split: np.ndarray
    predictions: dict[int, np.ndarray]
    confidence: dict[int, np.ndarray]
    accuracy: dict[int, dict[str, float | None]]
    flips: list[tuple[int, int]]
    visualizers: list[VisData]

    @property
    def n_samples(self) -> int:
        """N."""
        return int(self.labels.shape[0])


def collect_view_data(
    run: TrainingRun, folders: Sequence[ExportFolder], list_size: int
) -> ViewData:
    """Read and check everything the viewer shows.

    Args:
        run: the validated run (its ``epochs`` are the candidates).
        folders: one or more export folders, shown side by side in this order.
        list_size: how many samples the "flips most" and "moves most" lists hold.

    Returns:
        The :class:`ViewData` of the epochs every folder has exported.

    Raises:
        RunError: the run has no labels or no prediction files.
        ExportError: a folder has no export, the folders share no epoch, or an exported file
            is missing or broken.
    """
    _require_subject(run)
    epochs = shared_epochs(run, folders)
    dtype = np.uint8 if run.n_classes <= 256 else np.uint16
    predictions, confidence = {}, {}
    for epoch in epochs:
        predictions[epoch], confidence[epoch] = predict(run.predictions(epoch), dtype)
    split = split_codes(run)
    visualizers = [read_folder(folder, epochs, run, list_size) for folder in folders]
    labels = run.labels.astype(dtype)
    return ViewData(
        content_path=run.content_path,
        epochs=epochs,
        classes=list(run.classes),
        palette=[_hex(c) for c in class_palette(run.n_classes)],
        n_features=run.shape.n_features,
        labels=labels,
        split=split,
        predictions=predictions,
        confidence=confidence,
        accuracy={e: split_accuracy(predictions[e], labels, run) for e in epochs},
        flips=most_flips([predictions[e] for e in epochs], list_size),
        visualizers=visualizers,
    )


def _require_subject(run: TrainingRun) -> None:
    """Raise :class:`RunError` unless the run has labels and logits for every epoch."""
    if run.labels is None:
        raise RunError(
            f"{run.content_path / LABELS_FILE}: file not found; the viewer needs the labels "
            "(int [N]) to colour samples and measure accuracy"
        )
    if run.n_classes is None:
        raise RunError(
            f"{run.prediction_path(run.epochs[0])}: file not found; the viewer needs each "
            "epoch's logits (dataset/prediction/{epoch}.npy, float [N, C])"
        )


def shared_epochs(run: TrainingRun, folders: Sequence[ExportFolder]) -> list[int]:
    """The run's epochs that every folder has exported (a projection file), ascending.

    Raises:
        ExportError: a folder has none of them, or the folders have none in common.
    """
    found = [folder.require_epochs(run.epochs) for folder in folders]
    common = sorted(set(found[0]).intersection(*found[1:]))
    if not common:
        have = "; ".join(f"{f.name}: {_span(e)}" for f, e in zip(folders, found, strict=True))
        raise ExportError(f"vis={[f.name for f in folders]}: no epoch exported by all ({have})")
    return common


def _span(epochs: list[int]) -> str:
    return f"epoch {epochs[0]}" if len(epochs) == 1 else f"epochs {epochs[0]}..{epochs[-1]}"


def predict(logits: np.ndarray, dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    """``[N, C]`` logits -> (``[N]`` argmax as ``dtype``, float32 ``[N]`` softmax maximum)."""
    values = np.asarray(logits, dtype=np.float64)
    top = values.max(axis=1, keepdims=True)
    confidence = 1.0 / np.exp(values - top).sum(axis=1)
    return values.argmax(axis=1).astype(dtype), confidence.astype(np.float32)


def split_codes(run: TrainingRun) -> np.ndarray:
    """uint8 ``[N]``: :data:`SPLIT_CODES` of each sample (index.json's lists)."""
    split = np.full(run.shape.n_samples, SPLIT_CODES["other"], dtype=np.uint8)
    split[run.train_index] = SPLIT_CODES["train"]
    split[run.test_index] = SPLIT_CODES["test"]
    return split


def split_accuracy(prediction: np.ndarray, labels: np.ndarray, run: TrainingRun) -> dict:
    """``{"train", "test"}``: :func:`ttvis.plot.accuracy` of the ``[N]`` predictions on each
    part of the run (None for an empty part)."""
    parts = (("train", run.train_index), ("test", run.test_index))
    return {part: accuracy(prediction, labels, index) for part, index in parts}


def most_flips(predictions: Sequence[np.ndarray], size: int) -> list[tuple[int, int]]:
    """Up to ``size`` ``(sample, count)``, most changes of the ``[N]`` predictions between
    consecutive epochs first (ties: lower index first); samples that never flip are left out."""
    if len(predictions) < 2:
        return []
    stack = np.stack(predictions)
    counts = (stack[1:] != stack[:-1]).sum(axis=0)
    return _top(counts, size, int)


def path_lengths(positions: Sequence[np.ndarray], scales: Sequence[np.ndarray]) -> np.ndarray:
    """float64 ``[P]``: each point's 2-D path over the epochs, every epoch's ``[P, 2]``
    positions divided by the side of its ``[4]`` scale box (TimeVis boxes differ per epoch)."""
    total = np.zeros(positions[0].shape[0])
    previous = None
    for pos, scale in zip(positions, scales, strict=True):
        unit = (pos.astype(np.float64) - scale[:2]) / (scale[2] - scale[0])
        if previous is not None:
            total += np.linalg.norm(unit - previous, axis=1)
        previous = unit
    return total


def _top(values: np.ndarray, size: int, cast: type) -> list:
    order = np.argsort(-values, kind="stable")[:size]
    return [(int(i), cast(values[i])) for i in order if values[i] > 0]


def read_folder(folder: ExportFolder, epochs: list[int], run: TrainingRun, size: int) -> VisData:
    """One folder's positions, scales, backgrounds and metrics for ``epochs``, and its
    ``size`` samples that move most (a sample's F points averaged).

    Raises:
        ExportError: a missing or broken projection, scale, background or metrics.json.
    """
    vis = VisData(folder.name)
    for epoch in epochs:
        vis.positions[epoch] = folder.projection(epoch, run.shape.n_points).astype(np.float32)
        vis.scales[epoch] = folder.scale(epoch)
        vis.backgrounds[epoch] = check_background(folder.paths(epoch)["bgimg"])
    vis.metrics = read_metrics(folder, epochs)
    lengths = path_lengths([vis.positions[e] for e in epochs], [vis.scales[e] for e in epochs])
    per_sample = lengths.reshape(run.shape.n_samples, run.shape.n_features).mean(axis=1)
    vis.moves = _top(per_sample, size, lambda v: round(float(v), 4))
    return vis


def check_background(path: Path) -> Path:
    """``path`` when it is a readable PNG image, else :class:`ExportError` naming it."""
    from PIL import Image

    if not path.is_file():
        raise ExportError(f"{path}: file not found; expected the epoch's background image")
    try:
        with Image.open(path) as img:
            kind = img.format
    except OSError as err:
        raise ExportError(f"{path}: not a readable image ({err})") from None
    if kind != "PNG":
        raise ExportError(f"{path}: a {kind} image; expected a PNG")
    return path


def read_metrics(folder: ExportFolder, epochs: list[int]) -> dict[str, dict] | None:
    """``metrics.json``'s per-epoch rows for ``epochs`` (keys as strings), or None without
    the file (evaluate.py not run)."""
    path = folder.metrics_path
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["epochs"]
        return {str(e): dict(rows[str(e)]) for e in epochs if str(e) in rows}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ExportError(
            f'{path}: not evaluate.py\'s metrics ({err!r}); expected {{"epochs": {{"1": '
            "{...}, ...}}; rerun evaluate.py or delete it"
        ) from None


def _hex(colour: np.ndarray) -> str:
    r, g, b = (int(round(float(c) * 255)) for c in colour[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
