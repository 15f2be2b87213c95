"""The export folder (docs/design.md §2): where one visualizer's files are and how to read them.

:class:`ExportFolder` is the one reader of an export folder, for ``evaluate.py``, the plot
command and the benchmarks; the writers (the export callback, resume) name their files with
the same layout, :func:`ttvis.export.export_paths`. Every missing or broken file is an
:class:`ExportError` naming the file, what was found and what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ttvis.export import atomic_write_text, epochs_with_projection, export_paths

if TYPE_CHECKING:
    from ttvis.modules.autoencoder import Autoencoder

__all__ = ["EXPORT_ROOT", "METRICS_FILE", "ExportError", "ExportFolder"]

EXPORT_ROOT = Path("visualize")  # default parent of export folders, under content_path
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
SHARED_MODEL = "1.pth"  # older TimeVis exports: one vismodel for every epoch


class ExportError(RuntimeError):
    """An export folder lacks a file a command needs, or a file is unreadable."""


class ExportFolder:
    """One visualizer's export folder.

    Args:
        path: the folder, e.g. ``content_path/visualize/DVI`` or an ``output_dir=``.
        name: the visualizer's name in messages and ``metrics.json`` (default: the folder's).
    """

    def __init__(self, path: str | Path, name: str | None = None) -> None:
        self.path = Path(path).expanduser()
        self.name = name if name is not None else self.path.name

    @classmethod
    def of(cls, content_path: str | Path, vis_name: str, output_dir: str | Path | None = None):
        """The folder of ``vis_name``: ``output_dir`` when given, else
        ``content_path/visualize/{vis_name}`` (where train.py writes by default)."""
        if output_dir is not None:
            return cls(output_dir, vis_name)
        return cls(Path(content_path) / EXPORT_ROOT / vis_name, vis_name)

    @classmethod
    def named(
        cls, content_path: str | Path, vis: str | Sequence[str], output_dir: str | Path | None
    ) -> list[ExportFolder]:
        """The folders a command's ``vis=`` and ``output_dir=`` settings name.

        Args:
            content_path: the run folder.
            vis: ``"DVI"``, ``"DVI,TimeVis"`` or ``["DVI", "TimeVis"]``.
            output_dir: one export folder written with train.py's ``output_dir=`` (then ``vis``
                names one visualizer), or None for ``content_path/visualize/{vis}``.

        Raises:
            ConfigError: no name, or several names with one ``output_dir``.
        """
        from ttvis.config_check import ConfigError

        items = vis.split(",") if isinstance(vis, str) else [str(v) for v in vis]
        names = [name.strip() for name in items if name.strip()]
        if not names:
            raise ConfigError(f"vis={vis!r}: expected one or more export folder names")
        if output_dir is not None and len(names) > 1:
            raise ConfigError(
                f"vis={names}: expected one name with output_dir={output_dir} (one export folder)"
            )
        return [cls.of(content_path, name, output_dir) for name in names]

    def __repr__(self) -> str:
        return f"ExportFolder({str(self.path)!r}, name={self.name!r})"

    # ------------------------------------------------------------------ layout
    def paths(self, epoch: int) -> dict[str, Path]:
        """``{"projection", "scale", "bgimg", "vismodel"}`` -> that epoch's file."""
        return export_paths(self.path, epoch)

    @property
    def metrics_path(self) -> Path:
        """``metrics.json``, written by evaluate.py."""
        return self.path / METRICS_FILE

    @property
    def plots_dir(self) -> Path:
        """``plots/``, the pictures."""
        return self.path / PLOTS_DIR

    def epochs(self, candidates: Iterable[int]) -> list[int]:
        """The ``candidates`` that have a projection file, ascending."""
        return epochs_with_projection(self.path, candidates)

    def require_epochs(self, candidates: Iterable[int]) -> list[int]:
        """:meth:`epochs`, raising :class:`ExportError` when there is none."""
        candidates = sorted(candidates)
        found = self.epochs(candidates)
        if not found:
            raise ExportError(
                f"no exports under {self.path / 'projection'} for epochs "
                f"{_epoch_list(candidates)}; run train.py first (with the same output_dir=)"
            )
        return found

    # ------------------------------------------------------------------ reading
    def projection(self, epoch: int, n_points: int | None = None) -> np.ndarray:
        """``projection/{epoch}.npy``: finite float64 ``[n_points, 2]``."""
        path = self.paths(epoch)["projection"]
        proj = _load_npy(path)
        expected = (n_points if n_points is not None else proj.shape[0], 2)
        if proj.shape != expected:
            raise ExportError(f"{path}: shape {proj.shape}; expected {list(expected)}")
        if not np.isfinite(proj).all():
            raise ExportError(f"{path}: contains NaN or inf")
        return proj.astype(np.float64)

    def scale(self, epoch: int) -> np.ndarray:
        """``scale/{epoch}.npy``: float64 ``[4]`` ``x_min, y_min, x_max, y_max``, min < max."""
        path = self.paths(epoch)["scale"]
        scale = _load_npy(path).astype(np.float64).reshape(-1)
        if scale.shape != (4,) or not np.isfinite(scale).all():
            raise ExportError(f"{path}: {scale}; expected [4] finite x_min, y_min, x_max, y_max")
        if not (scale[0] < scale[2] and scale[1] < scale[3]):
            raise ExportError(f"{path}: {scale}; expected x_min < x_max and y_min < y_max")
        return scale

    def background(self, epoch: int) -> np.ndarray | None:
        """``bgimg/{epoch}.png`` as ``[H, W, 3]`` uint8 RGB, or None when it is missing."""
        from PIL import Image

        path = self.paths(epoch)["bgimg"]
        if not path.is_file():
            return None
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"))
        except OSError as err:
            raise ExportError(f"{path}: not a readable image ({err})") from None

    def visualizer_path(self, epoch: int) -> Path:
        """``vismodel/{epoch}.pth``, or the lone ``vismodel/1.pth`` of older TimeVis exports
        (one model for every epoch)."""
        own = self.paths(epoch)["vismodel"]
        if own.is_file():
            return own
        model_dir = own.parent
        found = sorted(model_dir.glob("*.pth")) if model_dir.is_dir() else []
        if [p.name for p in found] == [SHARED_MODEL]:
            return found[0]
        raise ExportError(
            f"{own}: file not found (and {model_dir} does not hold a single shared "
            f"{SHARED_MODEL}); run train.py first"
        )

    def visualizer(self, epoch: int, device: torch.device | str = "cpu") -> Autoencoder:
        """The epoch's :class:`Autoencoder` in eval mode on ``device``."""
        from ttvis.modules.autoencoder import Autoencoder

        path = self.visualizer_path(epoch)
        try:
            state = torch.load(path, map_location=device, weights_only=True)
            model = Autoencoder(list(state["encoder_dims"]), list(state["decoder_dims"]))
            model.load_state_dict(state["state_dict"])
        except Exception as err:
            raise ExportError(f"{path}: not a loadable visualizer export ({err})") from err
        return model.to(device).eval()

    # ------------------------------------------------------------------ writing
    def write_metrics(self, results: dict[str, Any]) -> Path:
        """Write evaluate.py's ``results`` to ``metrics.json`` atomically."""
        text = json.dumps(results, indent=2, allow_nan=False) + "\n"
        return atomic_write_text(self.metrics_path, text)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ExportError(f"{path}: file not found; run train.py first") from None
    except (ValueError, OSError, EOFError) as err:
        raise ExportError(f"{path}: not a readable .npy array ({err})") from None


def _epoch_list(epochs: list[int], shown: int = 5) -> str:
    if len(epochs) <= shown:
        return ", ".join(map(str, epochs))
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} epochs)"
