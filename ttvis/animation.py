"""The animation of an exported visualization: ``plots/run.gif`` (or ``run.mp4``).

One frame per epoch, every frame over the same box (the union of the epochs' scales), so motion
on screen is motion in the projection; optionally the paths of the samples that moved most.
Frames are drawn by :func:`ttvis.plot.render_epoch` from the exports.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ttvis.export import atomic_path, atomic_write_bytes, export_paths
from ttvis.export_folder import PLOTS_DIR, ExportFolder
from ttvis.plot import PlotSettings, PlotSubject, epoch_title, load_view, render_epoch
from ttvis.run import TrainingRun

log = logging.getLogger("ttvis.plot")

ANIMATION_NAME = "run"


def union_limits(scales: Iterable[np.ndarray]) -> np.ndarray:
    """``[4]`` box covering every ``[4]`` scale: min of the mins, max of the maxes."""
    boxes = np.asarray(list(scales), dtype=np.float64).reshape(-1, 4)
    return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])


def moved_most(out_dir: str | Path, epochs: Sequence[int], rows: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` of ``rows [R]`` with the longest 2-D path over ``epochs``, longest first.

    Path length: the sum of Euclidean steps between consecutive epochs' projections.

    Returns:
        ``[min(k, R)]`` int64 rows.
    """
    if k <= 0 or rows.size == 0 or len(epochs) < 2:
        return np.zeros(0, dtype=np.int64)
    out_dir = Path(out_dir)
    length = np.zeros(rows.size, dtype=np.float64)
    prev = None
    for epoch in epochs:
        pos = np.load(export_paths(out_dir, epoch)["projection"], mmap_mode="r")[rows]
        if prev is not None:
            length += np.linalg.norm(pos - prev, axis=1)
        prev = pos
    order = np.argsort(-length, kind="stable")[:k]
    return rows[order]


def animation_frames(
    run: TrainingRun,
    out_dir: str | Path,
    epochs: Sequence[int],
    settings: PlotSettings,
    vis_name: str,
    subject: PlotSubject | None = None,
) -> Iterable[np.ndarray]:
    """Yield one ``[S, S, 3]`` uint8 frame per epoch (S = ``animation_size``), in order.

    Every frame shows the same box, the union of the epochs' scales, so motion on screen is
    motion in the projection. With ``settings.trajectories = K > 0`` the K points that moved
    most are drawn with their path so far.
    """
    subject = PlotSubject.from_run(run) if subject is None else subject
    out_dir = Path(out_dir)
    limits = union_limits(ExportFolder(out_dir).scale(e) for e in epochs)
    drawn = np.concatenate([subject.train_points, subject.test_points])
    tracked = moved_most(out_dir, epochs, drawn, settings.trajectories)
    history: list[np.ndarray] = []
    for epoch in epochs:
        view = load_view(out_dir, epoch, run)
        paths = None
        if tracked.size:
            history.append(view.projection[tracked])
            paths = (tracked, np.stack(history, axis=1))
        yield render_epoch(
            view,
            subject,
            settings,
            epoch_title(vis_name, view, subject),
            limits=limits,
            size=settings.animation_size,
            trajectories=paths,
        )


def gif_bytes(frames: Iterable[np.ndarray], frame_ms: int, loop: int = 0) -> bytes:
    """An animated GIF of ``[H, W, 3]`` uint8 frames, ``frame_ms`` milliseconds each."""
    from PIL import Image

    images = [
        Image.fromarray(f).quantize(colors=256, method=Image.Quantize.FASTOCTREE) for f in frames
    ]
    if not images:
        raise ValueError("no frames to animate")
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=int(frame_ms),
        loop=int(loop),
        optimize=False,
        disposal=1,
    )
    return buf.getvalue()


def ffmpeg_available() -> bool:
    """Whether matplotlib finds an ffmpeg executable for mp4 output."""
    from matplotlib.animation import FFMpegWriter

    return bool(FFMpegWriter.isAvailable())


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, frame_ms: int) -> Path:
    """Encode ``[S, S, 3]`` uint8 frames to an mp4 at ``path`` with ffmpeg, atomically."""
    from matplotlib.animation import FFMpegWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    frames = iter(frames)
    first = next(frames)
    height, width = first.shape[:2]
    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    image = fig.figimage(first)
    writer = FFMpegWriter(fps=1000.0 / frame_ms)
    with atomic_path(path, suffix=path.suffix) as tmp, writer.saving(fig, str(tmp), dpi):
        writer.grab_frame()
        for frame in frames:
            image.set_data(frame)
            writer.grab_frame()
    return path


def write_animation(
    run: TrainingRun,
    out_dir: str | Path,
    epochs: Sequence[int],
    settings: PlotSettings,
    vis_name: str,
    subject: PlotSubject | None = None,
) -> Path | None:
    """Write ``plots/run.gif`` (or ``run.mp4``): one frame per epoch of ``epochs``, in order.

    Returns:
        The path written, or None when ``epochs`` is empty.
    """
    epochs = sorted(epochs)
    if not epochs:
        return None
    start = time.perf_counter()
    frames = animation_frames(run, out_dir, epochs, settings, vis_name, subject)
    plots = Path(out_dir) / PLOTS_DIR
    fmt = settings.animation_format.lower()
    if fmt == "mp4" and not ffmpeg_available():
        log.warning("plots.animation_format=mp4 needs ffmpeg on PATH; writing a GIF instead")
        fmt = "gif"
    if fmt == "mp4":
        path = write_mp4(frames, plots / f"{ANIMATION_NAME}.mp4", settings.frame_ms)
    else:
        data = gif_bytes(frames, settings.frame_ms, settings.loop)
        path = atomic_write_bytes(plots / f"{ANIMATION_NAME}.gif", data)
    log.info("drew %s, %d frames (%.1fs)", path, len(epochs), time.perf_counter() - start)
    return path
