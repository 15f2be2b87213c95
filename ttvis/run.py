"""The training-run folder: discovery, validation and memory-mapped access (docs/design.md §1).

A run folder (``content_path``) holds what the user's own training wrote::

    model/{epoch}.pth                      subject model state per epoch (optional)
    dataset/representation/{epoch}.npy     float [N, D] or [N, F, D]
    dataset/prediction/{epoch}.npy         float [N, C] logits (classification)
    dataset/label/labels.npy               int [N]
    index.json        (optional)           {"train": [...], "test": [...]}
    config.json       (optional)           {"dataset": {"taskType": ..., "classes": [...]}}
    model.py          (optional)           subject model class

:class:`TrainingRun` checks all of it once, up front, and raises :class:`RunError` naming the
file and what was expected; afterwards every array is opened with ``mmap_mode="r"`` so that a
run of tens of GB is never loaded whole. Nothing here ever writes into the folder.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

REPRESENTATION_DIR = Path("dataset/representation")
PREDICTION_DIR = Path("dataset/prediction")
LABELS_FILE = Path("dataset/label/labels.npy")
INDEX_FILE = Path("index.json")
CONFIG_FILE = Path("config.json")
MODEL_DIR = Path("model")
MODEL_CODE = Path("model.py")
CLASSIFICATION = "classification"

_EPOCH_FILE = re.compile(r"^[1-9][0-9]*\.npy$")


class RunError(ValueError):
    """A run folder is missing a file or holds one that breaks the data contract."""


def _open_npy(path: Path) -> np.ndarray:
    """Open ``path`` memory-mapped, turning numpy's errors into a :class:`RunError`."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise RunError(f"{path}: file not found") from None
    except (ValueError, OSError, EOFError) as err:
        raise RunError(f"{path}: not a readable .npy array ({err})") from None


def discover_epochs(content_path: str | Path) -> list[int]:
    """Epoch numbers with a representation file, sorted ascending.

    Args:
        content_path: the run folder.

    Returns:
        The positive integers ``e`` for which ``dataset/representation/{e}.npy`` exists.
        Other files in that folder are ignored with a warning.
    """
    rep_dir = Path(content_path) / REPRESENTATION_DIR
    if not rep_dir.is_dir():
        raise RunError(
            f"{rep_dir}: folder not found; a run folder must hold dataset/representation/"
            "{epoch}.npy files (see README, 'Input layout')"
        )
    epochs, ignored = [], []
    for entry in sorted(rep_dir.iterdir()):
        if _EPOCH_FILE.match(entry.name):
            epochs.append(int(entry.stem))
        else:
            ignored.append(entry.name)
    if ignored:
        log.warning(
            "Ignoring %d file(s) in %s whose names are not '{positive epoch}.npy': %s",
            len(ignored),
            rep_dir,
            ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""),
        )
    if not epochs:
        raise RunError(
            f"{rep_dir}: no representation files named '{{epoch}}.npy' (1.npy, 2.npy, ...)"
        )
    return sorted(epochs)


def representation_dim(content_path: str | Path) -> int:
    """D, the representation width, read from the first epoch's ``.npy`` header only.

    Args:
        content_path: the run folder.

    Returns:
        The last axis length of ``dataset/representation/{first epoch}.npy``.
    """
    first = discover_epochs(content_path)[0]
    path = Path(content_path) / REPRESENTATION_DIR / f"{first}.npy"
    arr = _open_npy(path)
    if arr.ndim not in (2, 3):
        raise RunError(f"{path}: shape {arr.shape}; expected [N, D] or [N, F, D]")
    return int(arr.shape[-1])


def selected_epochs(value: object) -> list[int] | None:
    """An ``epochs=`` setting as :class:`TrainingRun` takes it: None (every epoch), one epoch
    (``epochs=5``) or a list (``epochs=[1,5,10]``, also an OmegaConf ``ListConfig``)."""
    if value is None:
        return None
    if isinstance(value, int):
        return [value]
    return list(value)


@dataclass(frozen=True)
class RunShape:
    """Sizes shared by every epoch of a run."""

    n_samples: int  # N
    n_features: int  # F, representations per sample (1 for [N, D] files)
    dim: int  # D

    @property
    def n_points(self) -> int:
        """N * F: the number of vertices a visualizer embeds per epoch."""
        return self.n_samples * self.n_features


class TrainingRun:
    """A validated, read-only view of one training-run folder.

    Args:
        content_path: the run folder.
        epochs: optional explicit epoch selection; every entry must have a representation file.
        check_values: also scan each representation for NaN/inf (reads every epoch once,
            in chunks, never whole).

    Raises:
        RunError: on the first file that breaks the data contract, naming it.
    """

    def __init__(
        self,
        content_path: str | Path,
        epochs: list[int] | None = None,
        check_values: bool = True,
    ) -> None:
        self.content_path = Path(content_path).expanduser().resolve()
        if not self.content_path.exists():
            raise RunError(f"content_path {self.content_path}: no such folder")
        if not self.content_path.is_dir():
            raise RunError(f"content_path {self.content_path}: not a folder")
        available = discover_epochs(self.content_path)
        if epochs is None or len(epochs) == 0:
            self.epochs = available
        else:
            missing = sorted(set(int(e) for e in epochs) - set(available))
            if missing:
                raise RunError(
                    f"epochs={list(epochs)}: no representation file for epoch(s) {missing} "
                    f"in {self.content_path / REPRESENTATION_DIR} (available: {available})"
                )
            self.epochs = sorted(set(int(e) for e in epochs))
        self.shape = self._check_representations(check_values)
        self.labels = self._load_labels()
        self.n_classes = self._check_predictions()
        self.train_index, self.test_index = self._load_index()
        self.task_type, self.classes = self._load_config()

    # ------------------------------------------------------------------ validation
    def _check_representations(self, check_values: bool) -> RunShape:
        shape, first_epoch = None, None
        for epoch in self.epochs:
            path = self.representation_path(epoch)
            arr = _open_npy(path)
            if arr.ndim not in (2, 3):
                raise RunError(f"{path}: shape {arr.shape}; expected [N, D] or [N, F, D]")
            if not np.issubdtype(arr.dtype, np.floating):
                raise RunError(f"{path}: dtype {arr.dtype}; expected a float array")
            this = RunShape(
                n_samples=arr.shape[0],
                n_features=arr.shape[1] if arr.ndim == 3 else 1,
                dim=arr.shape[-1],
            )
            if this.n_samples == 0 or this.dim == 0:
                raise RunError(f"{path}: shape {arr.shape}; expected non-empty N and D")
            if shape is None:
                shape, first_epoch = this, epoch
            elif this != shape:
                raise RunError(
                    f"{path}: shape {arr.shape} differs from epoch {first_epoch}'s "
                    f"{self._shape_tuple(shape)}; N, F and D must be the same in every epoch"
                )
            if check_values:
                bad_rows = _count_nonfinite_rows(arr)
                if bad_rows:
                    raise RunError(
                        f"{path}: {bad_rows} of {arr.shape[0]} rows contain NaN or inf "
                        f"(epoch {epoch}); representations must be finite"
                    )
        assert shape is not None
        return shape

    @staticmethod
    def _shape_tuple(shape: RunShape) -> tuple[int, ...]:
        if shape.n_features == 1:
            return (shape.n_samples, shape.dim)
        return (shape.n_samples, shape.n_features, shape.dim)

    def _load_labels(self) -> np.ndarray | None:
        path = self.content_path / LABELS_FILE
        if not path.exists():
            return None
        labels = np.asarray(_open_npy(path))
        if labels.ndim != 1 or labels.shape[0] != self.shape.n_samples:
            raise RunError(
                f"{path}: shape {labels.shape}; expected [{self.shape.n_samples}] "
                "(one label per sample, N from the representation files)"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            raise RunError(f"{path}: dtype {labels.dtype}; expected integer class labels")
        return labels.astype(np.int64)

    def _check_predictions(self) -> int | None:
        n_classes, first_epoch = None, None
        for epoch in self.epochs:
            path = self.prediction_path(epoch)
            if not path.exists():
                if n_classes is not None:
                    raise RunError(f"{path}: file not found, but epoch {first_epoch} has one")
                continue
            arr = _open_npy(path)
            if arr.ndim != 2 or arr.shape[0] != self.shape.n_samples:
                raise RunError(
                    f"{path}: shape {arr.shape}; expected [{self.shape.n_samples}, C] "
                    "(one row of logits per sample)"
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise RunError(f"{path}: dtype {arr.dtype}; expected float logits")
            if n_classes is None:
                n_classes, first_epoch = arr.shape[1], epoch
            elif arr.shape[1] != n_classes:
                raise RunError(
                    f"{path}: {arr.shape[1]} classes, but epoch {first_epoch}'s prediction "
                    f"file has {n_classes}"
                )
        if n_classes is not None and self.labels is not None:
            lo, hi = int(self.labels.min()), int(self.labels.max())
            if lo < 0 or hi >= n_classes:
                raise RunError(
                    f"{self.content_path / LABELS_FILE}: labels span {lo}..{hi}; expected "
                    f"0..{n_classes - 1} ({n_classes} classes in the prediction files)"
                )
        return n_classes

    def _load_index(self) -> tuple[np.ndarray, np.ndarray]:
        n = self.shape.n_samples
        path = self.content_path / INDEX_FILE
        if not path.exists():
            return np.arange(n), np.zeros(0, dtype=np.int64)
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict) or "train" not in data:
            raise RunError(f'{path}: expected an object {{"train": [...], "test": [...]}}')
        parts = {}
        for key in ("train", "test"):
            values = data.get(key, [])
            if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in values
            ):
                raise RunError(f'{path}: "{key}" must be a flat list of integers (sample indices)')
            arr = np.asarray(values, dtype=np.int64).reshape(-1)
            if arr.size and (arr.min() < 0 or arr.max() >= n):
                raise RunError(
                    f'{path}: "{key}" holds indices {arr.min()}..{arr.max()}; expected 0..{n - 1}'
                )
            if np.unique(arr).size != arr.size:
                raise RunError(f'{path}: "{key}" holds duplicate indices')
            parts[key] = arr
        if parts["train"].size == 0:
            raise RunError(f'{path}: "train" is empty; at least one training sample is needed')
        overlap = np.intersect1d(parts["train"], parts["test"])
        if overlap.size:
            raise RunError(
                f"{path}: {overlap.size} indices are both train and test (first: {overlap[0]})"
            )
        return parts["train"], parts["test"]

    def _load_config(self) -> tuple[str | None, list[str]]:
        path = self.content_path / CONFIG_FILE
        task, classes = None, None
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RunError(f"{path}: not valid JSON ({err})") from None
            dataset = data.get("dataset", {}) if isinstance(data, dict) else {}
            if "attributes" not in dataset:
                log.info(
                    "%s: no dataset.attributes; ttvis does not need them, the original tool's "
                    "backend does (python -m ttvis.tool_config content_path=... adds them)",
                    path,
                )
            task = dataset.get("taskType")
            classes = dataset.get("classes")
            if classes is not None and self.n_classes is not None:
                if len(classes) != self.n_classes:
                    raise RunError(
                        f"{path}: {len(classes)} class names, but the prediction files have "
                        f"{self.n_classes} columns"
                    )
        if task is None:
            task = CLASSIFICATION if self.n_classes is not None else None
        if classes is None:
            classes = [str(c) for c in range(self.n_classes or 0)]
        return task, [str(c) for c in classes]

    # ------------------------------------------------------------------ access
    def require_training_points(self, n_neighbors: int) -> None:
        """Raise :class:`RunError` unless there are more training points than ``n_neighbors``."""
        n_train = self.train_points.size
        if n_train < n_neighbors + 1:
            raise RunError(
                f"{self.content_path}: {n_train} training points, but n_neighbors={n_neighbors} "
                f"needs at least {n_neighbors + 1}; lower method.n_neighbors or list more "
                f"training samples in {self.content_path / INDEX_FILE}"
            )

    def representation_path(self, epoch: int) -> Path:
        """Path of ``dataset/representation/{epoch}.npy``."""
        return self.content_path / REPRESENTATION_DIR / f"{epoch}.npy"

    def prediction_path(self, epoch: int) -> Path:
        """Path of ``dataset/prediction/{epoch}.npy``."""
        return self.content_path / PREDICTION_DIR / f"{epoch}.npy"

    def model_state_path(self, epoch: int) -> Path:
        """Path of ``model/{epoch}.pth``."""
        return self.content_path / MODEL_DIR / f"{epoch}.pth"

    @property
    def model_code_path(self) -> Path:
        """Path of the optional ``model.py``."""
        return self.content_path / MODEL_CODE

    @property
    def is_classification(self) -> bool:
        """True when the run has predictions and its task is classification."""
        return self.task_type == CLASSIFICATION and self.n_classes is not None

    def representations(self, epoch: int) -> np.ndarray:
        """Memory-mapped representations of ``epoch``: ``[N * F, D]``, any float dtype."""
        arr = _open_npy(self.representation_path(epoch))
        return arr.reshape(self.shape.n_points, self.shape.dim)

    def predictions(self, epoch: int) -> np.ndarray | None:
        """Memory-mapped logits of ``epoch``: ``[N, C]``, or None without prediction files."""
        path = self.prediction_path(epoch)
        return _open_npy(path) if path.exists() else None

    def point_index(self, sample_index: np.ndarray) -> np.ndarray:
        """Sample indices ``[M]`` -> point (row) indices ``[M * F]`` of :meth:`representations`."""
        f = self.shape.n_features
        sample_index = np.asarray(sample_index, dtype=np.int64)
        return (sample_index[:, None] * f + np.arange(f)[None, :]).reshape(-1)

    @cached_property
    def train_points(self) -> np.ndarray:
        """Row indices ``[N_train * F]`` of training points, ascending sample order."""
        return self.point_index(self.train_index)

    @cached_property
    def test_points(self) -> np.ndarray:
        """Row indices ``[N_test * F]`` of test points."""
        return self.point_index(self.test_index)

    def train_representations(self, epoch: int, dtype=np.float32) -> np.ndarray:
        """Training representations of ``epoch`` loaded into memory: ``[N_train * F, D]``."""
        return np.ascontiguousarray(self.representations(epoch)[self.train_points], dtype=dtype)

    def __repr__(self) -> str:
        s = self.shape
        return (
            f"TrainingRun({self.content_path}, epochs={self.epochs}, N={s.n_samples}, "
            f"F={s.n_features}, D={s.dim}, train={self.train_index.size}, "
            f"test={self.test_index.size}, classes={self.n_classes})"
        )


def _count_nonfinite_rows(arr: np.ndarray, chunk_rows: int = 65536) -> int:
    """Rows of ``arr`` (any shape ``[N, ...]``) that hold a NaN or inf, read in chunks."""
    bad = 0
    for start in range(0, arr.shape[0], chunk_rows):
        block = np.asarray(arr[start : start + chunk_rows])
        bad += int((~np.isfinite(block.reshape(block.shape[0], -1))).any(axis=1).sum())
    return bad
