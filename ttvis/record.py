"""Record a run folder from your own training (README, "Recording a run").

:class:`Recorder` (plain PyTorch: call ``save(epoch)`` after each epoch) and
:class:`RecordTrainingDynamics` (a Lightning callback) write, every recorded epoch, the seed
layout ttvis reads (``ttvis.run``) and the original tool's backend loads::

    model/{e}.pth                       the model's state dict
    dataset/representation/{e}.npy      [N, D] float32 (float16 on request)
    dataset/prediction/{e}.npy          [N, C] float32 raw outputs
    dataset/label/labels.npy            [N] int64
    index.json                          {"train": [0..n_train-1], "test": [n_train..N-1]}
    config.json                         task type, class names, the original tool's attributes

Rows are the training dataset's samples in order, then the test dataset's. Every file is
written atomically, the representation last, so an epoch appears only when complete. An
existing folder is continued when it holds the same run (sample counts, labels, classes) and
refused otherwise.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ttvis.export import atomic_save_npy, atomic_torch_save, atomic_write_text
from ttvis.record_pass import PassResult, RecordError, record_pass
from ttvis.run import (
    CLASSIFICATION,
    CONFIG_FILE,
    INDEX_FILE,
    LABELS_FILE,
    MODEL_DIR,
    PREDICTION_DIR,
    REPRESENTATION_DIR,
    RunError,
)
from ttvis.subject import MAX_LINEAR_RESIDUAL, LinearHead, import_class
from ttvis.tool_config import with_tool_entries

log = logging.getLogger(__name__)

__all__ = ["RecordError", "RecordTrainingDynamics", "Recorder"]

DEFAULT_BATCH_SIZE = 256
DTYPES = {"float32": np.float32, "float16": np.float16}
# Rows of the first recorded epoch on which the head's linearity is tested (a float64
# least-squares fit; more rows cost time and memory without changing the verdict).
LINEARITY_CHECK_ROWS = 16384
# Rows on which a stored model recipe must reproduce the recorded outputs, and how closely
# (relative to the outputs' largest magnitude).
RECIPE_CHECK_ROWS = 256
RECIPE_TOLERANCE = 1e-4
# Folder entries that mark a ttvis run folder; a non-empty folder with none of them is refused.
RUN_ENTRIES = ("dataset", "model", "index.json", "config.json", "model.py", "visualize")


def _first_epoch_file(folder: Path) -> Path | None:
    files = sorted(folder.glob("*.npy")) if folder.is_dir() else []
    return files[0] if files else None


def check_existing_run(out_dir: Path, n_train: int, n_test: int, classes: list[str] | None) -> None:
    """Refuse ``out_dir`` when it holds something other than this run.

    Args:
        out_dir: the run folder; absent or empty is fine.
        n_train: training samples this run records.
        n_test: test samples.
        classes: class names, when known.

    Raises:
        RunError: naming the file, the value found and the value expected.
    """
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise RunError(f"{out_dir}: exists and is not a folder")
    names = sorted(p.name for p in out_dir.iterdir())
    if names and not set(names) & set(RUN_ENTRIES):
        raise RunError(
            f"{out_dir}: holds {names[:5]} but no run folder entries ({', '.join(RUN_ENTRIES)});"
            " refusing to write into it: choose an empty or new out_dir"
        )
    n = n_train + n_test
    advice = f"{out_dir} holds a different run; choose another out_dir or delete it"
    sizes = [(out_dir / LABELS_FILE, 0)]
    for folder in (REPRESENTATION_DIR, PREDICTION_DIR):
        first = _first_epoch_file(out_dir / folder)
        if first is not None:
            sizes.append((first, 0))
    for path, axis in sizes:
        if path.exists():
            found = np.load(path, mmap_mode="r", allow_pickle=False).shape[axis]
            if found != n:
                raise RunError(
                    f"{path}: {found} samples, expected {n} ({n_train} train + {n_test} test); "
                    + advice
                )
    index_path = out_dir / INDEX_FILE
    if index_path.exists():
        try:
            index = json.loads(index_path.read_text())
            found = (len(index.get("train", [])), len(index.get("test", [])))
        except (json.JSONDecodeError, AttributeError, TypeError) as err:
            raise RunError(f"{index_path}: not a ttvis index.json ({err}); " + advice) from None
        if found != (n_train, n_test):
            raise RunError(
                f"{index_path}: {found[0]} train + {found[1]} test samples, expected "
                f"{n_train} + {n_test}; " + advice
            )
    if classes is not None:
        check_classes(out_dir, classes)


def check_classes(out_dir: Path, classes: list[str]) -> None:
    """Refuse ``out_dir`` when its ``config.json`` or prediction files name other classes.

    Raises:
        RunError: naming the file, the classes found and those expected.
    """
    advice = f"{out_dir} holds a different run; choose another out_dir or delete it"
    config_path = out_dir / CONFIG_FILE
    if config_path.exists():
        found = (json.loads(config_path.read_text()).get("dataset") or {}).get("classes")
        if found is not None and [str(c) for c in found] != list(classes):
            raise RunError(f"{config_path}: classes {found}, expected {classes}; " + advice)
    first = _first_epoch_file(out_dir / PREDICTION_DIR)
    if first is not None:
        found = np.load(first, mmap_mode="r", allow_pickle=False).shape[1]
        if found != len(classes):
            raise RunError(f"{first}: {found} classes, expected {len(classes)}; " + advice)


def _is_rank_zero() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class Recorder:
    """Write the run folder ttvis reads, one ``save(epoch)`` per recorded epoch.

    Args:
        out_dir: the run folder (``content_path``); created if absent. A folder of the same
            run is continued; one of another run (other sample counts, labels or classes) is
            refused with :class:`~ttvis.run.RunError`.
        model: any ``nn.Module`` (a DDP wrapper is unwrapped); its output is ``[B, C]``.
        train_data: map-style dataset of ``(input, label)``, with the evaluation transform.
        test_data: the same for test samples (optional); rows after the training rows.
        feature_layer: name of the module whose output is the representation (flattened to
            ``[B, D]``); None uses ``model.feature()``.
        classes: ``[C]`` class names; default ``train_data.classes`` if present, else
            ``"0".."C-1"``.
        batch_size: samples per forward of the recording pass.
        device: where the pass runs; default the model's device (a model elsewhere is moved
            there for the pass and back).
        every_n_epochs: record epochs that are multiples of this.
        epochs: record exactly these epochs (overrides ``every_n_epochs``).
        dtype: ``"float32"`` or ``"float16"`` representations (predictions stay float32).
        num_workers: ``DataLoader`` workers of the recording pass.
        model_class: class to rebuild the model for backgrounds when its head is not linear
            in the features (a class or ``"package.module:Class"``; default ``type(model)``);
            it needs a ``prediction(features)`` method.
        model_kwargs: constructor arguments for ``model_class`` (JSON-serialisable); default
            ``model.hparams`` of a LightningModule, else ``{}`` when the constructor needs none.
    """

    def __init__(
        self,
        out_dir: str | Path,
        model: nn.Module,
        *,
        train_data: Dataset,
        test_data: Dataset | None = None,
        feature_layer: str | None = None,
        classes: Iterable[str] | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: torch.device | str | None = None,
        every_n_epochs: int = 1,
        epochs: Iterable[int] | None = None,
        dtype: str = "float32",
        num_workers: int = 0,
        model_class: type | str | None = None,
        model_kwargs: dict | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise RecordError(f"dtype={dtype!r}; expected one of {sorted(DTYPES)}")
        if every_n_epochs < 1:
            raise RecordError(f"every_n_epochs={every_n_epochs}; expected a positive integer")
        self.out_dir = Path(out_dir).expanduser()
        self.model = _unwrap(model)
        self.datasets = [train_data] + ([test_data] if test_data is not None else [])
        self.n_train = len(train_data)
        self.n_test = len(test_data) if test_data is not None else 0
        if self.n_train == 0:
            raise RecordError("train_data is empty; ttvis needs training samples")
        self.feature_layer = feature_layer
        given = classes if classes is not None else getattr(train_data, "classes", None)
        self.classes = [str(c) for c in given] if given is not None else None
        self.batch_size = batch_size
        self.device = device
        self.every_n_epochs = every_n_epochs
        self.epochs = sorted(set(int(e) for e in epochs)) if epochs is not None else None
        if self.epochs is not None and (not self.epochs or self.epochs[0] < 1):
            raise RecordError(f"epochs={epochs}; expected positive epoch numbers")
        self.dtype = dtype
        self.num_workers = num_workers
        self.model_class = model_class
        self.model_kwargs = model_kwargs
        self.seconds: dict[int, float] = {}  # recorded epoch -> extra wall time it cost
        self.subject_head: str | None = None  # "linear", "import" or "none" after a save
        self._layout_written = False
        check_existing_run(self.out_dir, self.n_train, self.n_test, self.classes)

    # ------------------------------------------------------------------ public
    def should_record(self, epoch: int) -> bool:
        """Whether ``epoch`` (1-based) is one the settings ask to record."""
        if self.epochs is not None:
            return epoch in self.epochs
        return epoch % self.every_n_epochs == 0

    def has_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` is already recorded (its representation file, written last)."""
        return (self.out_dir / REPRESENTATION_DIR / f"{epoch}.npy").exists()

    def save(self, epoch: int, force: bool = False) -> float | None:
        """Record ``epoch``: one pass over the data, then the epoch's files.

        Args:
            epoch: the 1-based epoch number the files are named after.
            force: record even when :meth:`should_record` says no.

        Returns:
            The wall time the recording took, in seconds; None when the epoch is skipped or
            this process is not rank zero (only rank zero writes).
        """
        if epoch < 1:
            raise RecordError(f"epoch={epoch}; epochs are numbered from 1")
        if not (force or self.should_record(epoch)) or not _is_rank_zero():
            return None
        start = time.perf_counter()
        result = self._pass()
        pass_seconds = time.perf_counter() - start
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        if (self.out_dir / LABELS_FILE).exists():
            self._check_same_run(result)  # before anything is written
        if not self._layout_written:
            self._write_layout(result, state)
        atomic_torch_save(self.out_dir / MODEL_DIR / f"{epoch}.pth", state)
        atomic_save_npy(self.out_dir / PREDICTION_DIR / f"{epoch}.npy", result.predictions)
        features = result.features.astype(DTYPES[self.dtype], copy=False)
        atomic_save_npy(self.out_dir / REPRESENTATION_DIR / f"{epoch}.npy", features)
        seconds = time.perf_counter() - start
        self.seconds[epoch] = seconds
        correct = result.predictions.argmax(1) == result.labels
        log.info(
            "recorded epoch %d into %s: %.2f s extra (pass %.2f s, writing %.2f s); "
            "accuracy train %.3f, test %s",
            epoch, self.out_dir, seconds, pass_seconds, seconds - pass_seconds,
            correct[: self.n_train].mean(),
            f"{correct[self.n_train :].mean():.3f}" if self.n_test else "-",
        )  # fmt: skip
        return seconds

    # ------------------------------------------------------------------ internals
    def _pass(self) -> PassResult:
        """:func:`record_pass` on ``self.device``; a model elsewhere is moved there for the
        pass and back afterwards (in place: an optimizer keeps its parameters)."""
        param = next(self.model.parameters(), None)
        home = param.device if param is not None else torch.device("cpu")
        device = torch.device(self.device) if self.device is not None else home
        if device != home:
            self.model.to(device)
        try:
            return record_pass(
                self.model, self.datasets, self.feature_layer, self.batch_size, device,
                self.num_workers,
            )  # fmt: skip
        finally:
            if device != home:
                self.model.to(home)

    def _check_same_run(self, result: PassResult) -> None:
        path = self.out_dir / LABELS_FILE
        stored = np.load(path, allow_pickle=False)
        if not np.array_equal(stored, result.labels):
            rows = np.flatnonzero(stored != result.labels)
            raise RunError(
                f"{path}: {rows.size} labels differ from this run's data (first: row "
                f"{rows[0]}, found {stored[rows[0]]}, expected {result.labels[rows[0]]}); "
                f"{self.out_dir} holds a different run, or the data order changed"
            )

    def _write_layout(self, result: PassResult, state: dict) -> None:
        """Labels, ``index.json`` and ``config.json`` (merged into an existing one), and the
        decision how ttvis will get the subject head; checked against what is there."""
        n_classes = result.predictions.shape[1]
        config_path = self.out_dir / CONFIG_FILE
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        if self.classes is None:  # the folder's own names when it has them, else "0".."C-1"
            found = (config.get("dataset") or {}).get("classes")
            self.classes = [str(c) for c in (found or range(n_classes))]
        if len(self.classes) != n_classes:
            raise RecordError(
                f"{len(self.classes)} class names {self.classes[:5]}..., but the model outputs "
                f"{n_classes} columns"
            )
        check_classes(self.out_dir, self.classes)
        if result.labels.min() < 0 or result.labels.max() >= n_classes:
            raise RecordError(
                f"labels span {result.labels.min()}..{result.labels.max()}; expected "
                f"0..{n_classes - 1} ({n_classes} model outputs)"
            )
        labels_path = self.out_dir / LABELS_FILE
        if not labels_path.exists():
            atomic_save_npy(labels_path, result.labels)
        n = self.n_train + self.n_test
        index = {"train": list(range(self.n_train)), "test": list(range(self.n_train, n))}
        atomic_write_text(self.out_dir / INDEX_FILE, json.dumps(index))
        config = with_tool_entries(config, CLASSIFICATION, self.classes)
        config["dataset"]["classes"] = self.classes
        recipe = self._subject_head(result, state)
        if recipe is not None:
            config["subject_model"] = recipe
        config["recorder"] = {
            "features": self.feature_layer or "feature()",
            "dtype": self.dtype,
            "subject_head": self.subject_head,
        }
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
        self._layout_written = True

    def _subject_head(self, result: PassResult, state: dict) -> dict | None:
        """Decide (and log) how ttvis gets the head for backgrounds: the least-squares linear
        head, or an importable class recipe for ``config.json``; None when linear or
        impossible."""
        rows = min(result.features.shape[0], LINEARITY_CHECK_ROWS)
        stored = result.features[:rows].astype(DTYPES[self.dtype])  # what ttvis will fit on
        head = LinearHead.fit(stored, result.predictions[:rows])
        residual = head.residual
        if head.accepts(MAX_LINEAR_RESIDUAL):
            self.subject_head = "linear"
            log.info(
                "backgrounds: the outputs are linear in the recorded features (least-squares "
                "residual %.1e); ttvis recovers that head from each epoch's data",
                residual,
            )
            return None
        recipe, reason = self._model_recipe(result, state)
        if recipe is None:
            self.subject_head = "none"
            log.warning(
                "backgrounds: the outputs are not linear in the recorded features (residual "
                "%.1e) and the model cannot be rebuilt (%s); ttvis will leave backgrounds "
                "white. Give the model a prediction(features) method in an importable module, "
                "or pass model_class=/model_kwargs=",
                residual,
                reason,
            )
            return None
        self.subject_head = "import"
        log.info(
            "backgrounds: the outputs are not linear in the recorded features (residual %.1e); "
            "config.json names %s, and ttvis rebuilds it from model/{epoch}.pth",
            residual,
            recipe["import"],
        )
        return recipe

    def _model_recipe(self, result: PassResult, state: dict) -> tuple[dict | None, str]:
        """``({"import", "kwargs"}, "")`` when ``model_class(**kwargs)`` with ``state`` loaded
        reproduces the recorded outputs from the features; else ``(None, why not)``."""
        cls = self.model_class or type(self.model)
        target = cls if isinstance(cls, str) else f"{cls.__module__}:{cls.__qualname__}"
        if target.startswith("__main__"):
            return None, f"{target} is defined in the script being run, not importable"
        kwargs = self.model_kwargs
        if kwargs is None:
            hparams = getattr(self.model, "hparams", None)
            kwargs = dict(hparams) if hparams is not None else {}
        try:
            json.dumps(kwargs)
        except TypeError as err:
            return None, f"its constructor arguments are not JSON-serialisable ({err})"
        try:
            with torch.random.fork_rng(devices=[]):  # building it must not move the user's stream
                model = import_class(target, "model_class")(**kwargs)
            model.load_state_dict(state)
            rows = min(result.features.shape[0], RECIPE_CHECK_ROWS)
            with torch.no_grad():
                out = model.eval().prediction(torch.from_numpy(result.features[:rows]))
            expected = result.predictions[:rows]
            err = float(np.abs(out.float().numpy() - expected).max())
        except Exception as error:  # any failure (import, arguments, state): say why
            return None, f"{target}: {error}"
        scale = float(np.abs(expected).max()) or 1.0
        if err > RECIPE_TOLERANCE * scale:
            return None, (
                f"{target}.prediction(features) differs from the recorded outputs by {err:.2e}"
            )
        return {"import": target, "kwargs": kwargs}, ""


class RecordTrainingDynamics(L.Callback):
    """Lightning callback: record the run folder ttvis reads at the end of training epochs.

    Epoch ``e`` (1-based: ``trainer.current_epoch + 1``) is recorded after its training and
    validation. Under DDP only global rank zero runs the pass and writes (the others wait at
    a barrier), so the files equal a single-process run's. A fit resumed from a checkpoint
    continues: the checkpoint's epoch is recorded first if it is missing. The extra time
    each recording costs is logged (Python logging, and ``record/seconds`` to the trainer's
    logger). Arguments are :class:`Recorder`'s, with ``feature_layer`` a name in
    ``pl_module.named_modules()`` (a unique suffix such as ``"avgpool"`` also works).
    """

    def __init__(self, out_dir: str | Path, **recorder_kwargs) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.recorder_kwargs = recorder_kwargs
        self.recorder: Recorder | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Build the :class:`Recorder` for ``pl_module`` (checks the folder before training)."""
        if stage == "fit" and self.recorder is None:
            self.recorder = Recorder(self.out_dir, pl_module, **self.recorder_kwargs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """On a fit resumed from an end-of-epoch checkpoint, record that epoch if it is due and
        missing (a mid-epoch checkpoint no longer holds the end-of-epoch weights: warn)."""
        done = trainer.current_epoch
        if done == 0 or not self.recorder.should_record(done) or self.recorder.has_epoch(done):
            return
        progress = trainer.fit_loop.epoch_progress.current
        if progress.started == progress.completed:  # resumed exactly at an epoch's end
            self._record(trainer, done)
        elif trainer.is_global_zero:
            log.warning(
                "epoch %d is not recorded in %s and the fit resumed from a mid-epoch "
                "checkpoint, which no longer holds that epoch's weights; it stays missing",
                done,
                self.recorder.out_dir,
            )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Record the epoch that just finished, if it is due."""
        epoch = trainer.current_epoch + 1
        if self.recorder.should_record(epoch):
            self._record(trainer, epoch)

    def _record(self, trainer: L.Trainer, epoch: int) -> None:
        if trainer.is_global_zero:
            seconds = self.recorder.save(epoch, force=True)
            if trainer.logger is not None:
                trainer.logger.log_metrics({"record/seconds": seconds}, step=trainer.global_step)
        trainer.strategy.barrier("ttvis-record")
