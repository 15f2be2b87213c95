"""Pictures of an exported visualization: per-epoch figures and an animation of the run.

Reads only exported files (docs/design.md §2) and the run's labels, saved logits and index; it
never loads a subject model or a visualizer. Writes, under ``{out_dir}/plots/``::

    {epoch}.png   the decision background (bgimg/{epoch}.png over scale/{epoch}.npy) with
                  every train and test sample on it, coloured by label; misclassified samples
                  as a ring in the label colour around a dot in the predicted colour
    run.gif       one frame per epoch, all frames over the same box (or run.mp4 with
                  plots.animation_format=mp4 where ffmpeg is available)

Drawing uses matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``), never pyplot's
global state. The axes box of a figure is ``PlotSettings.axes_rect`` of the figure and its
limits are exactly the scale, so :func:`figure_pixel_of` maps a projected point to the pixel
its marker covers.

Command line (re-draw from existing exports, no training)::

    python -m ttvis.plot content_path=/data/run vis=DVI
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttvis.config_check import PLOT_RULES, check_config
from ttvis.export import (
    atomic_save_png,
    class_palette,
)
from ttvis.export_folder import PLOTS_DIR, ExportFolder
from ttvis.run import TrainingRun

log = logging.getLogger("ttvis.plot")  # also when run as python -m ttvis.plot


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class PlotSettings:
    """How pictures look; every field is a key of ``conf/plots/default.yaml`` (same defaults).

    Sizes are in pixels unless stated; marker areas in points² (matplotlib's ``scatter`` ``s``),
    widths in points (1/72 inch; ``dpi / 72`` pixels).
    """

    size: int = 1000  # figure width and height of plots/{epoch}.png
    dpi: int = 100  # figure resolution; fonts and markers scale with it
    axes_rect: tuple[float, float, float, float] = (0.045, 0.01, 0.91, 0.91)  # figure fractions
    font_size: float = 9.0  # legend, points
    title_size: float = 11.0  # title, points
    background_alpha: float = 0.6  # opacity of the decision background over white
    background_interpolation: str = "nearest"  # matplotlib imshow interpolation
    reference_points: int = 2000  # up to this many points: full marker_size and alpha
    marker_size: float = 30.0  # marker area at or below reference_points
    min_marker_size: float = 3.0  # floor of the marker area for large N
    alpha: float = 1.0  # marker opacity at or below reference_points
    min_alpha: float = 0.25  # floor of the marker opacity for large N
    train_marker: str = "o"  # matplotlib marker of training samples
    test_marker: str = "^"  # matplotlib marker of test samples
    test_edge_color: str = "black"  # outline of test markers
    test_edge_width: float = 0.3  # outline width of test markers
    ring_scale: float = 4.0  # area of a misclassified sample's ring / marker area
    ring_width: float = 1.0  # ring line width
    misclassified_min_alpha: float = 0.7  # rings and dots are at least this opaque
    plain_color: str = "tab:blue"  # marker colour when a run has no labels
    legend_max_classes: int = 20  # class entries shown in the legend
    legend_columns: int = 7  # legend entries per row (the legend sits above the axes)
    legend_marker_size: float = 7.0  # legend marker diameter, points
    trajectories: int = 0  # animation: draw the paths of the K samples that moved most
    trajectory_width: float = 1.0  # path line width
    animation_format: str = "gif"  # gif, or mp4 (needs ffmpeg; falls back to gif)
    animation_size: int = 600  # animation frame width and height
    frame_ms: int = 500  # time each frame is shown, milliseconds
    loop: int = 0  # GIF repeats (0 = forever)

    def __post_init__(self) -> None:
        check_config({"plots": asdict(self)}, PLOT_RULES)  # ConfigError, a ValueError

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> PlotSettings:
        """Settings from a ``plots`` config block (a dict or DictConfig); unknown keys raise."""
        if values is None:
            return cls()
        if not isinstance(values, dict):
            from omegaconf import OmegaConf

            values = OmegaConf.to_container(values, resolve=True)
        check_config({"plots": values}, PLOT_RULES)  # unknown keys and bad values alike
        values = dict(values)
        if "axes_rect" in values:
            values["axes_rect"] = tuple(float(v) for v in values["axes_rect"])
        return cls(**values)


def marker_style(n_points: int, settings: PlotSettings) -> tuple[float, float]:
    """Marker area (points²) and opacity (0..1) for a figure of ``n_points`` markers.

    Both shrink with ``sqrt(reference_points / n_points)`` above ``reference_points``, down to
    ``min_marker_size`` and ``min_alpha``, so dense clouds stay readable.
    """
    shrink = min(1.0, math.sqrt(settings.reference_points / max(n_points, 1)))
    size = max(settings.min_marker_size, settings.marker_size * shrink)
    alpha = max(settings.min_alpha, settings.alpha * shrink)
    return size, min(alpha, 1.0)


# ------------------------------------------------------------------ what is drawn


@dataclass(frozen=True)
class PlotSubject:
    """Run-level facts a picture needs, per point (row of a projection).

    Attributes:
        n_points: M = N * F, rows of every projection.
        n_features: F, points per sample.
        train_points: ``[M_train]`` int64 rows of training points.
        test_points: ``[M_test]`` int64 rows of test points.
        train_index: ``[N_train]`` int64 training samples (for accuracies).
        test_index: ``[N_test]`` int64 test samples.
        labels: ``[N]`` int64 per-sample labels, or None.
        classification: whether decision backgrounds and predictions apply.
        class_names: one name per colour of ``palette``.
        palette: ``[C, 3]`` float RGB in 0..1, :func:`ttvis.export.class_palette`.
    """

    n_points: int
    n_features: int
    train_points: np.ndarray
    test_points: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    labels: np.ndarray | None
    classification: bool
    class_names: list[str]
    palette: np.ndarray

    @classmethod
    def from_run(cls, run: TrainingRun) -> PlotSubject:
        """The subject of ``run``: its index, labels, class names and the background palette."""
        labels = run.labels
        if run.is_classification:
            n_colours = int(run.n_classes)
            names = list(run.classes)
        elif labels is not None and labels.size and labels.min() >= 0:
            n_colours = int(labels.max()) + 1
            names = list(run.classes) if len(run.classes) == n_colours else []
            names = names or [str(c) for c in range(n_colours)]
        else:
            n_colours, names = 0, []
        return cls(
            n_points=run.shape.n_points,
            n_features=run.shape.n_features,
            train_points=np.asarray(run.train_points),
            test_points=np.asarray(run.test_points),
            train_index=np.asarray(run.train_index),
            test_index=np.asarray(run.test_index),
            labels=labels,
            classification=run.is_classification,
            class_names=names,
            palette=class_palette(n_colours) if n_colours else np.zeros((0, 3), np.float32),
        )

    def point_labels(self) -> np.ndarray | None:
        """``[M]`` int64 label of each point (a sample's label repeated F times), or None."""
        if self.labels is None:
            return None
        return np.repeat(self.labels, self.n_features)


@dataclass(frozen=True)
class EpochView:
    """One epoch's exports, as read from disk.

    Attributes:
        epoch: the subject epoch.
        projection: ``[M, 2]`` float32 positions.
        scale: ``[4]`` float64 ``x_min, y_min, x_max, y_max`` the background covers.
        background: ``[H, W, 3]`` uint8 RGB, row 0 at ``y_max``; None when not drawn.
        predicted: ``[N]`` int64 predicted class per sample (argmax of the saved logits), or None.
    """

    epoch: int
    projection: np.ndarray
    scale: np.ndarray
    background: np.ndarray | None
    predicted: np.ndarray | None


def predicted_classes(logits: np.ndarray | None) -> np.ndarray | None:
    """``[N, C]`` saved logits (possibly memory-mapped) -> ``[N]`` int64 argmax, or None."""
    if logits is None:
        return None
    return np.asarray(np.argmax(np.asarray(logits), axis=1), dtype=np.int64)


def accuracy(predicted: np.ndarray, labels: np.ndarray, index: np.ndarray) -> float | None:
    """Share of samples ``index [K]`` whose ``predicted [N]`` equals ``labels [N]``; None if K=0."""
    if index.size == 0:
        return None
    return float(np.mean(predicted[index] == labels[index]))


def epoch_title(vis_name: str, view: EpochView, subject: PlotSubject) -> str:
    """``DVI · epoch 5 · train accuracy 93.1% · test accuracy 90.2%`` (accuracies if known)."""
    parts = [vis_name, f"epoch {view.epoch}"]
    if subject.classification and view.predicted is not None and subject.labels is not None:
        for name, index in (("train", subject.train_index), ("test", subject.test_index)):
            acc = accuracy(view.predicted, subject.labels, index)
            if acc is not None:
                parts.append(f"{name} accuracy {acc:.1%}")
    return " · ".join(parts)


# ------------------------------------------------------------------ geometry


def figure_dpi(settings: PlotSettings, size: int | None = None) -> float:
    """Dots per inch that make a ``size``-pixel figure look like the ``settings.size`` one."""
    size = settings.size if size is None else size
    return settings.dpi * size / settings.size


def figure_pixel_of(
    points: np.ndarray, limits: np.ndarray, size: int, axes_rect: Sequence[float]
) -> np.ndarray:
    """Figure pixel of data points in a ``size x size`` figure whose axes show ``limits``.

    Args:
        points: ``[M, 2]`` data positions.
        limits: ``[4]`` ``x_min, y_min, x_max, y_max`` of the axes.
        size: figure side, pixels.
        axes_rect: ``left, bottom, width, height`` of the axes as figure fractions.

    Returns:
        ``[M, 2]`` float64 ``(row, col)`` image coordinates (row 0 at the top); a pixel
        ``(r, c)`` covers ``r <= row < r + 1``, ``c <= col < c + 1``.
    """
    x_min, y_min, x_max, y_max = (float(v) for v in limits)
    left, bottom, width, height = (float(v) * size for v in axes_rect)
    points = np.asarray(points, dtype=np.float64)
    col = left + (points[:, 0] - x_min) / (x_max - x_min) * width
    up = bottom + (points[:, 1] - y_min) / (y_max - y_min) * height
    return np.stack([size - up, col], axis=1)


# ------------------------------------------------------------------ drawing


def render_epoch(
    view: EpochView,
    subject: PlotSubject,
    settings: PlotSettings,
    title: str = "",
    limits: np.ndarray | None = None,
    size: int | None = None,
    trajectories: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Draw one epoch's figure and return its pixels.

    Args:
        view: the epoch's projection, scale, background and predictions.
        subject: labels, train/test points, class names and palette.
        settings: sizes, markers, alpha rules.
        title: text above the axes.
        limits: ``[4]`` axes box; None uses ``view.scale`` (the background's own box).
        size: figure side in pixels; None uses ``settings.size``.
        trajectories: ``(rows [K], paths [K, T, 2])``: K points and their positions in the
            T epochs so far (oldest first), drawn as paths in their label colour; None: none.

    Returns:
        ``[size, size, 3]`` uint8 RGB, row 0 at the top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = settings.size if size is None else int(size)
    dpi = figure_dpi(settings, size)
    limits = np.asarray(view.scale if limits is None else limits, dtype=np.float64)
    fig = Figure(figsize=(size / dpi, size / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes(settings.axes_rect)
    ax.set_facecolor("white")
    ax.set_xticks([])
    ax.set_yticks([])

    if subject.classification and view.background is not None:
        _draw_background(ax, view, settings)
    _draw_points(ax, view, subject, settings)
    if trajectories is not None:
        _draw_trajectories(ax, *trajectories, subject, settings)
    ax.set_xlim(limits[0], limits[2])
    ax.set_ylim(limits[1], limits[3])
    ax.set_autoscale_on(False)
    if title:
        left = settings.axes_rect[0]
        fig.text(left, 1.0 - left / 4, title, fontsize=settings.title_size, va="top", ha="left")
    _draw_legend(fig, subject, view, settings)

    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[:, :, :3])


def _draw_background(ax, view: EpochView, settings: PlotSettings) -> None:
    """``bgimg`` over exactly ``view.scale``, its top row at ``y_max`` (docs/design.md §2)."""
    x_min, y_min, x_max, y_max = (float(v) for v in view.scale)
    ax.imshow(
        view.background,
        extent=(x_min, x_max, y_min, y_max),
        origin="upper",
        interpolation=settings.background_interpolation,
        alpha=settings.background_alpha,
        aspect="auto",
        zorder=0,
    )


def _point_colours(subject: PlotSubject, rows: np.ndarray, labels: np.ndarray | None, settings):
    from matplotlib.colors import to_rgb

    if labels is None or subject.palette.shape[0] == 0:
        return np.tile(np.asarray(to_rgb(settings.plain_color), np.float32), (rows.size, 1))
    return subject.palette[labels[rows]]


def _draw_points(ax, view: EpochView, subject: PlotSubject, settings: PlotSettings) -> None:
    """Train and test markers; misclassified ones as ring (label) + dot (prediction) on top."""
    n_drawn = subject.train_points.size + subject.test_points.size
    area, alpha = marker_style(n_drawn, settings)
    strong = max(alpha, settings.misclassified_min_alpha)
    labels = subject.point_labels()
    wrong = None
    if subject.classification and view.predicted is not None and labels is not None:
        predicted = np.repeat(view.predicted, subject.n_features)
        wrong = predicted != labels
    parts = (
        (subject.train_points, settings.train_marker, "none", 0.0),
        (subject.test_points, settings.test_marker, settings.test_edge_color, None),
    )
    for rows, marker, edge, width in parts:
        if rows.size == 0:
            continue
        width = settings.test_edge_width if width is None else width
        ok = rows if wrong is None else rows[~wrong[rows]]
        xy = view.projection[ok]
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=area,
            c=_point_colours(subject, ok, labels, settings),
            marker=marker,
            alpha=alpha,
            edgecolors=edge,
            linewidths=width,
            zorder=1,
        )
        if wrong is None:
            continue
        bad = rows[wrong[rows]]
        if bad.size == 0:
            continue
        xy = view.projection[bad]
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=area * settings.ring_scale,
            facecolors="none",
            edgecolors=subject.palette[labels[bad]],
            marker=marker,
            linewidths=settings.ring_width,
            alpha=strong,
            zorder=2,
        )
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=area,
            c=subject.palette[predicted[bad]],
            marker=marker,
            alpha=strong,
            edgecolors="none",
            zorder=3,
        )


def _draw_trajectories(ax, rows: np.ndarray, paths: np.ndarray, subject, settings) -> None:
    """Paths ``paths [K, T, 2]`` of points ``rows [K]``, each in its label colour."""
    from matplotlib import patheffects
    from matplotlib.collections import LineCollection

    if paths.shape[1] < 2:
        return
    colours = _point_colours(subject, rows, subject.point_labels(), settings)
    width = settings.trajectory_width
    outline = [patheffects.withStroke(linewidth=2 * width, foreground="white")]
    lines = LineCollection(
        list(paths), colors=colours, linewidths=width, zorder=4, path_effects=outline
    )
    ax.add_collection(lines, autolim=False)
    ax.scatter(paths[:, -1, 0], paths[:, -1, 1], s=settings.marker_size, c=colours, zorder=5)


def _draw_legend(fig, subject: PlotSubject, view: EpochView, settings: PlotSettings) -> None:
    """Class colours, train/test markers and the misclassified mark, in rows above the axes."""
    from matplotlib.lines import Line2D

    dark = "0.25"  # train/test/misclassified entries are about shape, not colour
    ms = settings.legend_marker_size
    handles = []
    shown = subject.class_names[: settings.legend_max_classes]
    for c, name in enumerate(shown):
        handles.append(
            Line2D([], [], marker="o", ls="", color=subject.palette[c], label=name, ms=ms)
        )
    hidden = len(subject.class_names) - len(shown)
    if hidden > 0:
        handles.append(Line2D([], [], ls="", label=f"(+{hidden} classes)"))
    if subject.test_points.size:
        handles.append(
            Line2D([], [], marker=settings.train_marker, ls="", color=dark, ms=ms, label="train")
        )
        handles.append(
            Line2D(
                [],
                [],
                marker=settings.test_marker,
                ls="",
                color=dark,
                ms=ms,
                markeredgecolor=settings.test_edge_color,
                markeredgewidth=settings.test_edge_width * 2,
                label="test",
            )
        )
    if subject.classification and view.predicted is not None and subject.labels is not None:
        handles.append(
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                ms=ms,
                mfc="none",
                mec=dark,
                mew=settings.ring_width * 1.5,
                label="misclassified (ring: label, dot: prediction)",
            )
        )
    if not handles:
        return
    left, bottom, width, height = settings.axes_rect
    fig.legend(
        handles=handles,
        loc="lower left",
        bbox_to_anchor=(left, bottom + height),
        ncol=max(1, min(settings.legend_columns, len(handles))),
        fontsize=settings.font_size,
        frameon=False,
        borderaxespad=0.2,
        handletextpad=0.2,
        columnspacing=1.0,
    )


# ------------------------------------------------------------------ reading exports


def load_view(out_dir: str | Path, epoch: int, run: TrainingRun) -> EpochView:
    """Read one epoch's projection, scale and background, and the run's saved logits.

    Args:
        out_dir: the export folder (``content_path/visualize/{VIS_NAME}`` or ``output_dir``).
        epoch: the subject epoch.
        run: the run (labels, index, ``dataset/prediction/{epoch}.npy``); no model is loaded.

    Raises:
        ExportError: a missing or malformed projection or scale.
    """
    folder = ExportFolder(out_dir)
    projection = folder.projection(epoch, run.shape.n_points)
    scale = folder.scale(epoch)
    background = folder.background(epoch) if run.is_classification else None
    predicted = predicted_classes(run.predictions(epoch)) if run.is_classification else None
    return EpochView(epoch, projection.astype(np.float32), scale, background, predicted)


# ------------------------------------------------------------------ writing


def draw_epochs(
    run: TrainingRun,
    out_dir: str | Path,
    epochs: Iterable[int],
    settings: PlotSettings,
    vis_name: str,
    subject: PlotSubject | None = None,
) -> dict[int, np.ndarray]:
    """Write ``plots/{epoch}.png`` for each of ``epochs`` from the exports under ``out_dir``.

    Args:
        run: the run the exports belong to.
        out_dir: the export folder.
        epochs: subject epochs to draw.
        settings: figure settings.
        vis_name: the name shown in the title (``DVI``, ``TimeVis``).
        subject: :meth:`PlotSubject.from_run` of ``run``, when already built.

    Returns:
        ``{epoch: [size, size, 3] uint8}``, the pixels written.
    """
    subject = PlotSubject.from_run(run) if subject is None else subject
    images = {}
    for epoch in epochs:
        start = time.perf_counter()
        view = load_view(out_dir, epoch, run)
        image = render_epoch(view, subject, settings, epoch_title(vis_name, view, subject))
        path = atomic_save_png(Path(out_dir) / PLOTS_DIR / f"{epoch}.png", image)
        images[epoch] = image
        log.info("epoch %d: drew %s (%.2fs)", epoch, path, time.perf_counter() - start)
    return images


def draw_run(
    run: TrainingRun,
    out_dir: str | Path,
    settings: PlotSettings,
    vis_name: str,
    epochs: Sequence[int] | None = None,
) -> tuple[list[int], Path | None]:
    """Draw every exported epoch of ``run`` under ``out_dir`` and the animation.

    Args:
        run: the run.
        out_dir: the export folder.
        settings: figure settings.
        vis_name: name in the titles.
        epochs: epochs to draw; None draws every epoch of ``run`` with a projection file.

    Returns:
        The epochs drawn and the animation's path.

    Raises:
        ExportError: no exported epoch, or a broken export file.
    """
    epochs = ExportFolder(out_dir).require_epochs(run.epochs if epochs is None else epochs)
    from ttvis.animation import write_animation  # it draws its frames with this module

    subject = PlotSubject.from_run(run)
    draw_epochs(run, out_dir, epochs, settings, vis_name, subject)
    return epochs, write_animation(run, out_dir, epochs, settings, vis_name, subject)


# ------------------------------------------------------------------ command line


def main() -> None:
    """``python -m ttvis.plot content_path=... vis=DVI [output_dir=...]``: re-draw pictures
    from exports (:func:`ttvis.cli.plot`, also the ``ttvis-plot`` console script)."""
    from ttvis.cli import plot

    plot()


if __name__ == "__main__":
    main()
