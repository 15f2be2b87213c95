"""Pictures (ttvis/plot.py): sizes, epochs differ, markers land where projections say, the
animation, non-classification runs, python -m ttvis.plot, and TensorBoard images/scalars."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import CONF_DIR, REPO_ROOT, run_evaluate, run_train, train_env
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from PIL import Image

from ttvis import animation
from ttvis.animation import ffmpeg_available, write_animation
from ttvis.export import atomic_save_npy, atomic_save_png, class_palette, projection_scale
from ttvis.plot import (
    EpochView,
    PlotSettings,
    PlotSubject,
    draw_run,
    epoch_title,
    figure_pixel_of,
    marker_style,
    render_epoch,
)
from ttvis.run import TrainingRun

EPOCHS = (1, 2, 3)
# Small, quick pictures; the geometry is the configured one.
SMALL = PlotSettings(size=300, dpi=30, animation_size=150)


def make_exports(
    root: Path,
    n: int = 60,
    classes: int = 3,
    labels: bool = True,
    predictions: bool = True,
    test_share: float = 0.25,
) -> Path:
    """A run folder with representations, labels, logits and DVI exports for :data:`EPOCHS`.

    Samples drift apart from epoch to epoch; every fifth sample is predicted wrong. Background
    images are solid class-0 colour in their top-left quadrant, white elsewhere.
    """
    rng = np.random.default_rng(0)
    run = root / "run"
    out = run / "visualize" / "DVI"
    (run / "dataset" / "representation").mkdir(parents=True)
    y = np.arange(n) % classes
    if labels:
        (run / "dataset" / "label").mkdir(parents=True)
        np.save(run / "dataset" / "label" / "labels.npy", y)
    n_test = int(n * test_share)
    index = {"train": list(range(n - n_test)), "test": list(range(n - n_test, n))}
    (run / "index.json").write_text(json.dumps(index))
    if predictions:
        names = [f"class-{c}" for c in range(classes)]
        config = {"dataset": {"taskType": "classification", "classes": names}}
        (run / "config.json").write_text(json.dumps(config))
        (run / "dataset" / "prediction").mkdir(parents=True)
    base = rng.normal(size=(n, 2)).astype(np.float32)
    for epoch in EPOCHS:
        np.save(run / "dataset" / "representation" / f"{epoch}.npy", rng.random((n, 4), "f4"))
        if predictions:
            wrong = (np.arange(n) % 5 == 0).astype(int) * (1 + epoch % (classes - 1))
            logits = np.eye(classes, dtype=np.float32)[(y + wrong) % classes]
            np.save(run / "dataset" / "prediction" / f"{epoch}.npy", logits)
        proj = base * epoch + rng.normal(size=(n, 2)).astype(np.float32) * 0.1
        atomic_save_npy(out / "projection" / f"{epoch}.npy", proj)
        atomic_save_npy(out / "scale" / f"{epoch}.npy", projection_scale(proj))
        bg = np.full((20, 20, 3), 255, np.uint8)
        bg[:10, :10] = np.rint(class_palette(classes)[0] * 255)
        atomic_save_png(out / "bgimg" / f"{epoch}.png", bg)
    return run


def rgb(colour) -> np.ndarray:
    return np.rint(np.asarray(colour, dtype=np.float64)[:3] * 255)


def near(pixel, colour, tol: float = 3) -> bool:
    return bool(np.abs(np.asarray(pixel, np.float64) - rgb(colour)).max() <= tol)


# ------------------------------------------------------------------ settings


def test_settings_defaults_match_config():
    conf = OmegaConf.load(CONF_DIR / "plots" / "default.yaml")
    assert PlotSettings.from_mapping(conf) == PlotSettings()
    with pytest.raises(ValueError, match="unknown"):
        PlotSettings.from_mapping({"sizee": 3})


def test_marker_style_shrinks_with_n_down_to_floors():
    s = PlotSettings()
    assert marker_style(10, s) == (s.marker_size, s.alpha)
    small, big, huge = (marker_style(n, s) for n in (1000, 10000, 10**7))
    assert small[0] > big[0] > huge[0] == s.min_marker_size
    assert small[1] > big[1] > huge[1] == s.min_alpha


def test_config_orders_plots_after_export_and_switch(demo_run, tmp_path):
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"content_path={demo_run}", "export.plots=false", "plots.trajectories=4"],
            return_hydra_config=True,
        )
    names = list(cfg.callbacks)
    assert names.index("export") < names.index("plots")
    HydraConfig.instance().set_config(cfg)  # vis_name may read ${hydra:...}
    try:
        cb = instantiate(cfg.callbacks.plots)
    finally:
        HydraConfig.instance().cfg = None  # leave no global state to other tests
    assert type(cb).__name__ == "PlotCallback" and cb.enabled is False
    assert cb.settings.trajectories == 4 and cb.out_dir == demo_run / "visualize" / "DVI"


# ------------------------------------------------------------------ pixels


def one_view(projection, scale, background=None, predicted=None) -> EpochView:
    return EpochView(
        1,
        np.asarray(projection, np.float32),
        np.asarray(scale, np.float64),
        background,
        None if predicted is None else np.asarray(predicted),
    )


def subject_of(labels, classification=True, test=()) -> PlotSubject:
    labels = None if labels is None else np.asarray(labels, np.int64)
    n = 3 if labels is None else labels.size
    test = np.asarray(test, np.int64)
    train = np.setdiff1d(np.arange(n), test)
    return PlotSubject(
        n_points=n,
        n_features=1,
        train_points=train,
        test_points=test,
        train_index=train,
        test_index=test,
        labels=labels,
        classification=classification,
        class_names=["a", "b", "c"],
        palette=class_palette(3),
    )


@pytest.mark.parametrize("scale", [[-1.0, -1.0, 1.0, 1.0], [2.0, -3.0, 6.0, 5.0]])
def test_markers_land_where_projection_says(scale):
    settings = replace(SMALL, alpha=1.0, marker_size=60.0, reference_points=10)
    x_min, y_min, x_max, y_max = scale
    w, h = x_max - x_min, y_max - y_min
    # Near the top-left, bottom-left and right-middle of the scale box, one class each.
    points = [[x_min + 0.15 * w, y_max - 0.15 * h], [x_min + 0.15 * w, y_min + 0.2 * h]]
    points.append([x_max - 0.25 * w, y_min + 0.5 * h])
    image = render_epoch(one_view(points, scale), subject_of([0, 1, 2]), settings)
    assert image.shape == (settings.size, settings.size, 3) and image.dtype == np.uint8
    rc = figure_pixel_of(np.array(points), np.array(scale), settings.size, settings.axes_rect)
    for (row, col), colour in zip(rc, class_palette(3), strict=True):
        assert near(image[int(row), int(col)], colour), (row, col, image[int(row), int(col)])
    # Orientation, independent of figure_pixel_of: y_max is up, x_min is left.
    palette = class_palette(3)
    rows_0, cols_0 = np.nonzero(np.all(np.abs(image - rgb(palette[0])) <= 3, axis=2))
    rows_1, _ = np.nonzero(np.all(np.abs(image - rgb(palette[1])) <= 3, axis=2))
    _, cols_2 = np.nonzero(np.all(np.abs(image - rgb(palette[2])) <= 3, axis=2))
    assert rows_0.mean() < rows_1.mean()  # class 0 (top) above class 1 (bottom)
    assert cols_0.mean() < cols_2.mean()  # class 0 (left) left of class 2 (right)
    axes_left = settings.axes_rect[0] * settings.size
    axes_top = settings.size * (1 - settings.axes_rect[1] - settings.axes_rect[3])
    assert rows_0.mean() - axes_top < 0.25 * settings.axes_rect[3] * settings.size
    assert cols_0.mean() - axes_left < 0.25 * settings.axes_rect[2] * settings.size


def test_background_orientation_and_misclassified_ring():
    settings = replace(
        SMALL,
        size=400,
        dpi=40,
        alpha=1.0,
        marker_size=400.0,
        reference_points=10,
        background_alpha=1.0,
        misclassified_min_alpha=1.0,
        ring_width=8.0,
    )
    scale = np.array([0.0, 0.0, 10.0, 10.0])
    palette = class_palette(3)
    bg = np.full((20, 20, 3), 255, np.uint8)
    bg[:10, :10] = rgb(palette[2])  # top-left quadrant: x < 5, y > 5
    # Sample 0 (label 0, predicted 1) in the bottom-right quadrant, on white.
    view = one_view([[7.5, 2.5], [1.0, 9.0], [9.0, 9.0]], scale, bg, predicted=[1, 0, 0])
    image = render_epoch(view, subject_of([0, 0, 0]), settings)
    rc = figure_pixel_of(np.array([[2.5, 7.5], [2.5, 2.5]]), scale, 400, settings.axes_rect)
    assert near(image[int(rc[0, 0]), int(rc[0, 1])], palette[2])  # top-left painted
    assert near(image[int(rc[1, 0]), int(rc[1, 1])], (1, 1, 1))  # bottom-left white
    ((row, col),) = figure_pixel_of(np.array([[7.5, 2.5]]), scale, 400, settings.axes_rect)
    assert near(image[int(row), int(col)], palette[1])  # the dot: predicted colour
    # The ring, in the label colour, around it: radius sqrt(s * ring_scale) / 2 points.
    radius_px = np.sqrt(settings.marker_size * settings.ring_scale) / 2 * settings.dpi / 72
    ring = image[int(row), int(col + 0.6 * radius_px) : int(col + 1.4 * radius_px)]
    assert any(near(p, palette[0], tol=6) for p in ring)


def test_non_classification_has_no_background_and_colours_by_label(tmp_path):
    run_path = make_exports(tmp_path, predictions=False)
    run = TrainingRun(run_path)
    assert not run.is_classification
    settings = replace(SMALL, alpha=1.0, reference_points=1000)
    subject = PlotSubject.from_run(run)
    from ttvis.plot import load_view

    view = load_view(run_path / "visualize" / "DVI", 1, run)
    assert view.background is None and view.predicted is None
    image = render_epoch(view, subject, settings)
    palette = class_palette(3)
    for c in range(3):  # every label colour appears
        assert np.all(np.abs(image - rgb(palette[c])) <= 3, axis=2).any()
    # The top-left of the axes (painted in the background file) stays white.
    x_min, _, x_max, y_max = view.scale
    corner = np.array([[x_min, y_max]]) + np.array([[0.02, -0.02]]) * (x_max - x_min)
    row, col = figure_pixel_of(corner, view.scale, settings.size, settings.axes_rect)[0]
    assert near(image[int(row), int(col)], (1, 1, 1))
    assert "accuracy" not in epoch_title("DVI", view, subject)


def test_no_labels_draws_one_colour(tmp_path):
    run_path = make_exports(tmp_path, labels=False, predictions=False)
    run = TrainingRun(run_path)
    subject = PlotSubject.from_run(run)
    assert subject.labels is None and subject.palette.shape == (0, 3)
    settings = replace(SMALL, alpha=1.0, reference_points=1000, plain_color="#ff00ff")
    epochs, gif = draw_run(run, run_path / "visualize" / "DVI", settings, "DVI")
    image = np.asarray(Image.open(run_path / "visualize" / "DVI" / "plots" / "1.png"))
    magenta = np.all(image[:, :, :3] == [255, 0, 255], axis=2)
    assert magenta.sum() > 20 and gif.exists()


# ------------------------------------------------------------------ files


def test_draw_run_writes_plots_and_animation(tmp_path):
    run_path = make_exports(tmp_path)
    run = TrainingRun(run_path)
    out = run_path / "visualize" / "DVI"
    settings = replace(SMALL, trajectories=3)
    epochs, gif = draw_run(run, out, settings, "DVI")
    assert epochs == list(EPOCHS) and gif == out / "plots" / "run.gif"
    images = []
    for epoch in EPOCHS:
        with Image.open(out / "plots" / f"{epoch}.png") as img:
            assert img.size == (settings.size, settings.size)
            images.append(np.asarray(img.convert("RGB")).astype(int))
    for a, b in zip(images, images[1:], strict=False):
        assert np.abs(a - b).sum(axis=2).astype(bool).mean() > 0.01  # epochs differ
    with Image.open(gif) as img:
        assert img.n_frames == len(EPOCHS)
        assert img.size == (settings.animation_size, settings.animation_size)
        frames = []
        for k in range(img.n_frames):
            img.seek(k)
            frames.append(np.asarray(img.convert("RGB")).astype(int))
    assert all(np.abs(a - b).sum() > 0 for a, b in zip(frames, frames[1:], strict=False))


def test_mp4_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch, caplog):
    run = TrainingRun(make_exports(tmp_path))
    monkeypatch.setattr(animation, "ffmpeg_available", lambda: False)
    settings = replace(SMALL, animation_format="mp4")
    path = animation.write_animation(
        run, run.content_path / "visualize" / "DVI", EPOCHS, settings, "x"
    )
    assert path.name == "run.gif" and "ffmpeg" in caplog.text


@pytest.mark.skipif(not ffmpeg_available(), reason="no ffmpeg on PATH")
def test_mp4_with_ffmpeg(tmp_path):
    run = TrainingRun(make_exports(tmp_path))
    settings = replace(SMALL, animation_format="mp4", animation_size=160)
    out = run.content_path / "visualize" / "DVI"
    path = write_animation(run, out, EPOCHS, settings, "DVI")
    assert path == out / "plots" / "run.mp4" and path.stat().st_size > 0


def test_epoch_title_accuracies(tmp_path):
    run = TrainingRun(make_exports(tmp_path, n=60, test_share=0.25))
    subject = PlotSubject.from_run(run)
    from ttvis.plot import load_view

    view = load_view(run.content_path / "visualize" / "DVI", 2, run)
    # Every fifth sample is wrong: train 0..44 has 9 of 45, test 45..59 has 3 of 15.
    title = epoch_title("DVI", view, subject)
    assert title == "DVI · epoch 2 · train accuracy 80.0% · test accuracy 80.0%"


# ------------------------------------------------------------------ python -m ttvis.plot


def run_plot(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ttvis.plot", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_draws_from_exports_and_exits_2_without(tmp_path):
    run_path = make_exports(tmp_path)
    # Drawing never loads a subject model: one that cannot be loaded changes nothing.
    (run_path / "model.py").write_text("raise RuntimeError('the subject model was loaded')\n")
    (run_path / "model").mkdir()
    for epoch in EPOCHS:
        (run_path / "model" / f"{epoch}.pth").write_bytes(b"not a state dict")
    proc = run_plot(
        [f"content_path={run_path}", "vis=DVI", "plots.size=200", "plots.animation_size=100"],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plots = run_path / "visualize" / "DVI" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["1.png", "2.png", "3.png", "run.gif"]
    with Image.open(plots / "2.png") as img:
        assert img.size == (200, 200)

    proc = run_plot([f"content_path={run_path}", "vis=[DVI,TimeVis]"], tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no exports under" in lines[0] and "TimeVis" in lines[0]


# ------------------------------------------------------------------ TensorBoard


def read_events(log_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_scalars_from_results(tmp_path):
    from ttvis.metrics_report import write_tensorboard_scalars

    results = {
        "vis": "DVI",
        "epochs": {
            "1": {"nn_train": 5.0, "ppr_train": 0.9, "nn_test": None},
            "3": {"nn_train": 6.0, "ppr_train": 0.95, "nn_test": None},
        },
        "temporal_train": -0.4,
        "temporal_test": None,
    }
    events = read_events(write_tensorboard_scalars(results, tmp_path / "tb"))
    tags = set(events.Tags()["scalars"])
    assert tags == {"DVI/eval/nn_train", "DVI/eval/ppr_train", "DVI/eval/temporal_train"}
    nn = events.Scalars("DVI/eval/nn_train")
    assert [(e.step, e.value) for e in nn] == [(1, 5.0), (3, 6.0)]
    assert events.Scalars("DVI/eval/temporal_train")[0].step == 3


@pytest.mark.slow
def test_train_draws_pictures_logs_images_and_evaluate_logs_scalars(run_copy, tmp_path):
    """train.py -> plots/{e}.png, run.gif, TensorBoard images; evaluate.py -> scalars."""
    run_train(
        [
            f"content_path={run_copy}",
            "logger=tensorboard",
            "plots.size=300",
            "plots.dpi=30",
            "plots.animation_size=150",
        ],
        tmp_path,
    )
    plots = run_copy / "visualize" / "DVI" / "plots"
    for epoch in EPOCHS:
        with Image.open(plots / f"{epoch}.png") as img:
            assert img.size == (300, 300)
    with Image.open(plots / "run.gif") as img:
        assert img.n_frames == len(EPOCHS)
    events = read_events(tmp_path / "hydra" / "tensorboard")
    assert "DVI/plot" in events.Tags()["images"]
    images = events.Images("DVI/plot")
    assert [e.step for e in images] == list(EPOCHS)
    assert (images[0].width, images[0].height) == (300, 300)

    run_evaluate([f"content_path={run_copy}", "k=5"], tmp_path, timeout=120)
    events = read_events(tmp_path / "evaluate" / "tensorboard")
    assert [e.step for e in events.Scalars("DVI/eval/nn_train")] == list(EPOCHS)
    assert "DVI/eval/ppr_test" in events.Tags()["scalars"]


@pytest.mark.slow
def test_timevis_draws_every_epoch_and_plots_can_be_turned_off(run_copy, tmp_path):
    run_train(
        [
            f"content_path={run_copy}",
            "method=timevis",
            "plots.size=200",
            "plots.animation_size=100",
        ],
        tmp_path / "a",
    )
    plots = run_copy / "visualize" / "TimeVis" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["1.png", "2.png", "3.png", "run.gif"]
    run_train([f"content_path={run_copy}", "export.plots=false"], tmp_path / "b")
    assert (run_copy / "visualize" / "DVI" / "projection" / "3.npy").exists()
    assert not (run_copy / "visualize" / "DVI" / "plots").exists()
