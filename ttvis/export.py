"""Exported artefacts (docs/design.md §2, §6): atomic files, the scale box and the background image.

Every file is written under a temporary name in its own folder and moved into place with
``os.replace``, so an interrupted run never leaves a truncated projection, image or model.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from ttvis.inference import batched

# ------------------------------------------------------------------ atomic writes


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success it replaces ``path``.

    For writers that need a file name (an encoder): write to the yielded path, and leave the
    block normally to move it into place with ``os.replace``; on any error the temporary file
    is removed and ``path`` keeps its old content. ``suffix`` ends the temporary name (some
    writers choose the format by it). The file gets ordinary permissions (``0666 & ~umask``),
    not ``mkstemp``'s owner-only ``0600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder + rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_torch_save(path: str | Path, obj: object) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_png(path: str | Path, image: np.ndarray) -> Path:
    """Save an ``[H, W, 3|4]`` uint8 or float image as PNG, pixel for pixel, atomically."""
    from matplotlib import image as mpl_image

    buf = io.BytesIO()
    mpl_image.imsave(buf, image, format="png")
    return atomic_write_bytes(path, buf.getvalue())


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def export_paths(out_dir: str | Path, epoch: int) -> dict[str, Path]:
    """Where one subject epoch's exports go (docs/design.md §2), by kind.

    Returns:
        ``{"projection", "scale", "bgimg", "vismodel"}`` -> ``{out_dir}/{kind}/{epoch}.{ext}``
        (``vismodel``: the visualizer as it serves that epoch, for DVI and TimeVis alike).
    """
    out_dir = Path(out_dir)
    return {
        "projection": out_dir / "projection" / f"{epoch}.npy",
        "scale": out_dir / "scale" / f"{epoch}.npy",
        "bgimg": out_dir / "bgimg" / f"{epoch}.png",
        "vismodel": out_dir / "vismodel" / f"{epoch}.pth",
    }


def epochs_with_projection(out_dir: str | Path, epochs: Iterable[int]) -> list[int]:
    """The ``epochs`` that have ``projection/{epoch}.npy`` under ``out_dir``, ascending."""
    return sorted(e for e in epochs if export_paths(out_dir, e)["projection"].is_file())


# ------------------------------------------------------------------ scale and grid


def projection_scale(points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """The square box a background image covers, as the original tool computes it.

    Args:
        points: ``[M, 2]`` projected positions.
        margin: growth on each side, as a fraction of the extent along that axis.

    Returns:
        ``[4]`` float32 ``x_min, y_min, x_max, y_max`` with ``x_min == y_min`` and
        ``x_max == y_max`` (the box is made square by taking the min of the mins and the max
        of the maxes).
    """
    points = np.asarray(points, dtype=np.float64)
    lo, hi = points.min(0), points.max(0)
    extent = hi - lo
    extent = np.where(extent > 0, extent, 1.0)  # a degenerate projection still gets a box
    lo, hi = lo - margin * extent, hi + margin * extent
    return np.array([lo.min(), lo.min(), hi.max(), hi.max()], dtype=np.float32)


def grid_points(scale: np.ndarray, resolution: int) -> np.ndarray:
    """Pixel-centre coordinates of a ``resolution x resolution`` image over ``scale``.

    Row 0 is the top of the image (``y_max``), column 0 its left (``x_min``).

    Returns:
        ``[resolution * resolution, 2]`` float32, row-major (pixel ``(r, c)`` at ``r * res + c``).
    """
    x_min, y_min, x_max, y_max = (float(v) for v in scale)
    step_x = (x_max - x_min) / resolution
    step_y = (y_max - y_min) / resolution
    xs = x_min + (np.arange(resolution) + 0.5) * step_x
    ys = y_max - (np.arange(resolution) + 0.5) * step_y
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def pixel_of(points: np.ndarray, scale: np.ndarray, resolution: int) -> np.ndarray:
    """Image ``(row, col)`` of each point ``[M, 2]`` in a ``resolution``-pixel image over ``scale``.

    Returns:
        ``[M, 2]`` int64, clipped to the image.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in scale)
    col = np.floor((points[:, 0] - x_min) / (x_max - x_min) * resolution)
    row = np.floor((y_max - points[:, 1]) / (y_max - y_min) * resolution)
    rc = np.stack([row, col], axis=1).astype(np.int64)
    return np.clip(rc, 0, resolution - 1)


# ------------------------------------------------------------------ background


def class_palette(n_classes: int) -> np.ndarray:
    """``[C, 3]`` float RGB in 0..1: matplotlib's tab10 up to 10 classes, tab20, then hsv."""
    from matplotlib import colormaps

    if n_classes <= 10:
        colours = colormaps["tab10"].colors[:n_classes]
    elif n_classes <= 20:
        colours = colormaps["tab20"].colors[:n_classes]
    else:
        colours = colormaps["hsv"](np.linspace(0, 1, n_classes, endpoint=False))[:, :3]
    return np.asarray(colours, dtype=np.float32)


def decision_colours(
    logits: torch.Tensor,
    palette: np.ndarray,
    boundary_gap: float = 0.15,
    boundary_strength: float = 0.1,
    min_strength: float = 0.3,
) -> np.ndarray:
    """Colour points by predicted class, fading to white where the top-2 gap is small.

    Args:
        logits: ``[M, C]`` subject outputs.
        palette: ``[C, 3]`` class colours in 0..1.
        boundary_gap: softmax top-1 minus top-2 below which a point counts as boundary.
        boundary_strength: colour strength (0 = white, 1 = full colour) of boundary points.
        min_strength: strength at the boundary gap; it rises linearly to 1 at gap 1.

    Returns:
        ``[M, 3]`` float32 RGB in 0..1.
    """
    probs = torch.softmax(logits.float(), dim=1)
    top2 = torch.topk(probs, k=min(2, probs.shape[1]), dim=1)
    pred = top2.indices[:, 0].cpu().numpy()
    gap = (top2.values[:, 0] - top2.values[:, 1]) if probs.shape[1] > 1 else top2.values[:, 0]
    gap = gap.cpu().numpy()
    span = max(1.0 - boundary_gap, 1e-6)
    strength = min_strength + (1.0 - min_strength) * np.clip((gap - boundary_gap) / span, 0, 1)
    strength = np.where(gap < boundary_gap, boundary_strength, strength)[:, None]
    return (1.0 - strength) + strength * palette[pred]


def render_background(
    decode: Callable[[torch.Tensor], torch.Tensor],
    head: Callable[[torch.Tensor], torch.Tensor] | None,
    scale: np.ndarray,
    resolution: int,
    palette: np.ndarray | None,
    batch_size: int = 90000,
    device: torch.device | str = "cpu",
    **colour_kwargs,
) -> np.ndarray:
    """The decision-region image over ``scale`` (§6).

    Args:
        decode: visualizer decoder, ``[B, 2] -> [B, D]``.
        head: subject head, ``[B, D] -> [B, C]`` logits; None paints a white image.
        scale: ``[4]`` box from :func:`projection_scale`.
        resolution: image side in pixels.
        palette: ``[C, 3]`` class colours.
        batch_size: grid points per decoder/head call.
        device: where decoding runs.
        colour_kwargs: forwarded to :func:`decision_colours`.

    Returns:
        ``[resolution, resolution, 3]`` uint8 RGB, row 0 at ``y_max``.
    """
    if head is None or palette is None:
        return np.full((resolution, resolution, 3), 255, dtype=np.uint8)

    def colours(points: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(decision_colours(head(decode(points)), palette, **colour_kwargs))

    grid = grid_points(scale, resolution)
    rgb = batched(colours, grid, batch_size, device).numpy().reshape(resolution, resolution, 3)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
