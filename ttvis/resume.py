"""Resuming an interrupted DVI run: per-epoch checkpoints keyed by a fingerprint of the settings.

After subject epoch e is exported, rank zero writes ``{out_dir}/resume/{e}.pt`` holding what
the next epoch needs (the visualizer's weights, the k-NN graph, the training points' positions)
and a fingerprint of everything that shaped epoch e: the method, model, export and stopping
settings, the seed, and the input files of e and of every epoch before it (the fingerprints
chain). Starting the same command again skips the leading epochs whose checkpoint matches and
whose exports are all present; a changed setting or input changes the fingerprint, so that epoch
and every later one are retrained.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from ttvis.export import atomic_torch_save, export_paths
from ttvis.knn import KNNGraph
from ttvis.run import INDEX_FILE, TrainingRun

log = logging.getLogger(__name__)

RESUME_DIR = "resume"


def settings_fingerprint(cfg: DictConfig) -> str:
    """Hex digest of the settings that change a visualizer's result.

    Covers ``method`` (but ``method.step_graph``), ``model``, ``export`` (but
    ``export.plots``), ``seed``, ``trainer.max_epochs`` and ``gradient_clip_val``, the early
    stopping callback; not the logger, progress bars, devices or output paths.
    """
    callbacks = cfg.get("callbacks") or {}
    export = OmegaConf.to_container(cfg.export, resolve=True)
    export.pop("plots", None)  # pictures are redrawn, never a reason to retrain
    method = OmegaConf.to_container(cfg.method, resolve=True)
    # How the steps run, like the devices: a GPU's graph draws other random numbers, as
    # another device does. Left out, checkpoints written before the setting existed still match.
    method.pop("step_graph", None)
    (method.get("module") or {}).pop("step_graph", None)
    settings = {
        "method": method,
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "export": export,
        "seed": cfg.seed,
        "max_epochs": cfg.trainer.get("max_epochs"),
        "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "early_stopping": OmegaConf.to_container(callbacks["early_stopping"], resolve=True)
        if callbacks.get("early_stopping")
        else None,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def _file_identity(path: Path) -> list:
    """``[name, size, mtime_ns]`` of ``path``, or ``[name]`` when it does not exist."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return [path.name]
    return [path.name, stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class EpochCheckpoint:
    """What a subject epoch hands the next one (docs/design.md §4.5).

    Attributes:
        state: the visualizer's :class:`~ttvis.modules.Autoencoder` state dict (CPU tensors).
        knn: the epoch's k-NN graph of training points.
        positions: ``[N_train * F, 2]`` float32 training points' positions.
    """

    state: dict[str, torch.Tensor]
    knn: KNNGraph
    positions: np.ndarray


class ResumeStore:
    """Reads and writes the per-epoch checkpoints of one export folder.

    Args:
        out_dir: the export folder, ``content_path/visualize/{VIS_NAME}``.
        run: the validated training run.
        settings: :func:`settings_fingerprint` of the config.
    """

    def __init__(self, out_dir: str | Path, run: TrainingRun, settings: str) -> None:
        self.out_dir = Path(out_dir)
        self.run = run
        self.fingerprints: dict[int, str] = {}
        chain = settings
        inputs = [_file_identity(run.content_path / INDEX_FILE)]
        for epoch in run.epochs:
            identity = [epoch, *inputs, _file_identity(run.representation_path(epoch))]
            chain = hashlib.sha256((chain + json.dumps(identity)).encode()).hexdigest()
            self.fingerprints[epoch] = chain

    def path(self, epoch: int) -> Path:
        """``{out_dir}/resume/{epoch}.pt``."""
        return self.out_dir / RESUME_DIR / f"{epoch}.pt"

    def save(self, epoch: int, checkpoint: EpochCheckpoint) -> Path:
        """Write ``epoch``'s checkpoint atomically (call it after the exports, on rank zero)."""
        return atomic_torch_save(
            self.path(epoch),
            {
                "fingerprint": self.fingerprints[epoch],
                "state": {k: v.detach().cpu() for k, v in checkpoint.state.items()},
                "knn_indices": torch.from_numpy(np.ascontiguousarray(checkpoint.knn.indices)),
                "knn_dists": torch.from_numpy(np.ascontiguousarray(checkpoint.knn.dists)),
                "positions": torch.from_numpy(np.ascontiguousarray(checkpoint.positions)),
            },
        )

    def load(self, epoch: int) -> EpochCheckpoint | None:
        """``epoch``'s checkpoint when it matches the current settings and inputs and all of
        the epoch's exports exist; None otherwise (the epoch must be trained)."""
        path = self.path(epoch)
        exports = export_paths(self.out_dir, epoch).values()
        if not path.is_file() or not all(p.is_file() for p in exports):
            return None
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a checkpoint we cannot read is one we retrain
            log.warning("%s is unreadable (%s); epoch %d will be retrained", path, err, epoch)
            return None
        if data.get("fingerprint") != self.fingerprints[epoch]:
            return None
        return EpochCheckpoint(
            state=data["state"],
            knn=KNNGraph(data["knn_indices"].numpy(), data["knn_dists"].numpy()),
            positions=data["positions"].numpy(),
        )

    def completed(self) -> tuple[list[int], EpochCheckpoint | None]:
        """The leading run epochs already done with these settings, and the last one's
        checkpoint (None when nothing is done)."""
        done, last = [], None
        for epoch in self.run.epochs:
            checkpoint = self.load(epoch)
            if checkpoint is None:
                break
            done.append(epoch)
            last = checkpoint
        return done, last
