"""Time drawing the pictures of a run: every plots/{epoch}.png and plots/run.gif.

    python benchmarks/plot_speed.py [--epochs 50] [--points 10000] [--classes 10]
                                    [--resolution 300] [--repeats 3] [--keep DIR]
                                    [overrides ...]

Builds synthetic exports in a temporary folder (or ``--keep DIR``): a run of ``--points``
samples (80% train, 20% test) whose classes drift into clusters over ``--epochs`` epochs, with
saved logits (some samples misclassified), class names, and per epoch a projection, its scale
and a ``--resolution`` decision background. Then times :func:`ttvis.plot.draw_run` with the
configured ``plots`` settings (``conf/plots/default.yaml``; extra arguments are overrides such
as ``trajectories=20``) and prints per-repeat figures and their median. No model is involved.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from ttvis.export import (
    atomic_save_npy,
    atomic_save_png,
    class_palette,
    decision_colours,
    grid_points,
    projection_scale,
)
from ttvis.plot import PlotSettings, draw_run
from ttvis.run import TrainingRun

CONF = Path(__file__).resolve().parents[1] / "conf"
CLASSES = ["plane", "car", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def build_exports(
    root: Path, epochs: int, points: int, classes: int, resolution: int, seed: int = 0
) -> Path:
    """Write a synthetic run folder with exports under ``root / 'run'``; return its path."""
    rng = np.random.default_rng(seed)
    run = root / "run"
    out = run / "visualize" / "DVI"
    labels = rng.integers(0, classes, points)
    np.save(_mk(run / "dataset" / "label") / "labels.npy", labels)
    perm = rng.permutation(points)
    n_train = int(0.8 * points)
    index = {"train": perm[:n_train].tolist(), "test": perm[n_train:].tolist()}
    (run / "index.json").write_text(json.dumps(index))
    names = (CLASSES * (classes // len(CLASSES) + 1))[:classes]
    config = {"dataset": {"taskType": "classification", "classes": names}}
    (run / "config.json").write_text(json.dumps(config))
    angle = 2 * np.pi * np.arange(classes) / classes
    centres = np.stack([np.cos(angle), np.sin(angle)], axis=1) * 5
    start = rng.normal(size=(points, 2)) * 3
    palette = class_palette(classes)
    for epoch in range(1, epochs + 1):
        t = epoch / epochs
        pos = (1 - t) * start + t * centres[labels] + rng.normal(size=(points, 2)) * (1.5 - t)
        pos = pos.astype(np.float32)
        logits = -np.linalg.norm(pos[:, None, :] - centres[None], axis=2) * (1 + 2 * t)
        np.save(_mk(run / "dataset" / "representation") / f"{epoch}.npy", pos)
        np.save(_mk(run / "dataset" / "prediction") / f"{epoch}.npy", logits.astype(np.float32))
        scale = projection_scale(pos)
        grid = grid_points(scale, resolution)
        grid_logits = -np.linalg.norm(grid[:, None, :] - centres[None], axis=2) * (1 + 2 * t)
        rgb = decision_colours(torch.from_numpy(grid_logits), palette)
        image = np.rint(rgb.reshape(resolution, resolution, 3) * 255).astype(np.uint8)
        atomic_save_npy(out / "projection" / f"{epoch}.npy", pos)
        atomic_save_npy(out / "scale" / f"{epoch}.npy", scale)
        atomic_save_png(out / "bgimg" / f"{epoch}.png", image)
    return run


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--points", type=int, default=10000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--resolution", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="build the run here and keep it")
    parser.add_argument("overrides", nargs="*", help="plots settings, e.g. trajectories=20")
    args = parser.parse_args()

    plots = OmegaConf.load(CONF / "plots" / "default.yaml")
    plots = OmegaConf.merge(plots, OmegaConf.from_dotlist(args.overrides))
    settings = PlotSettings.from_mapping(plots)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        start = time.perf_counter()
        run_path = build_exports(root, args.epochs, args.points, args.classes, args.resolution)
        print(
            f"built {args.epochs} epochs x {args.points} points, {args.classes} classes, "
            f"{args.resolution}px backgrounds in {time.perf_counter() - start:.1f}s"
        )
        run = TrainingRun(run_path, check_values=False)
        out_dir = run.content_path / "visualize" / "DVI"
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            epochs, animation = draw_run(run, out_dir, settings, "DVI")
            times.append(time.perf_counter() - start)
            print(
                f"repeat {repeat + 1}: {len(epochs)} plots + {animation.name} in {times[-1]:.1f}s "
                f"({times[-1] / len(epochs):.2f}s per epoch)",
                flush=True,
            )
        print(f"median: {statistics.median(times):.1f}s for {args.epochs} epochs")


if __name__ == "__main__":
    main()
