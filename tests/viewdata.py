"""A small synthetic run with exports written directly (no training), for the viewer's tests.

40 samples of 3 classes, epochs 1-3, train 0..29 and test 30..39, and export folders whose
projections, scales and backgrounds are chosen so that a test knows where everything must be:

* each epoch has its own scale box (:data:`SCALES`), and its background is white with a red
  square covering the data region :func:`red_region` (columns 60-80%, rows 20-40% of the image);
* sample 0 (label ``cat``) sits at the red square's centre in every epoch;
* sample 1 (label ``dog``) moves: at 20% / 30% / 40% of the box's width along its bottom;
* sample 7's prediction changes every epoch; sample 5 is misclassified in every epoch;
* the other samples sit in the lower left quarter of the box, away from the red square.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["cat", "dog", "bird"]
N_SAMPLES = 40
N_TRAIN = 30
EPOCHS = (1, 2, 3)
SCALES = {1: (0.0, 0.0, 10.0, 10.0), 2: (-5.0, -5.0, 15.0, 15.0), 3: (0.0, 0.0, 20.0, 20.0)}
BG_SIDE = 50  # background image side, pixels
RED = (255, 0, 0)
RED_COLUMNS = (0.6, 0.8)  # share of the image's width
RED_ROWS = (0.2, 0.4)  # share of the image's height, from the top


def labels() -> np.ndarray:
    """int64 ``[N]``: sample ``i`` has label ``i % 3`` (sample 0 cat, 1 dog, 2 bird)."""
    return np.arange(N_SAMPLES) % len(CLASSES)


def logits(epoch: int) -> np.ndarray:
    """float32 ``[N, C]`` logits of ``epoch``: the label wins by a margin growing with the
    sample's index, except sample 5 (always class ``(label + 1) % 3``) and sample 7 (class
    ``epoch % 3``)."""
    y = labels()
    out = np.zeros((N_SAMPLES, len(CLASSES)), np.float32)
    out[np.arange(N_SAMPLES), y] = 1.0 + 0.05 * np.arange(N_SAMPLES)
    out[5] = 0.0
    out[5, (y[5] + 1) % 3] = 2.0
    out[7] = 0.0
    out[7, epoch % 3] = 1.5
    return out


def red_region(epoch: int) -> tuple[float, float, float, float]:
    """Data ``x_min, y_min, x_max, y_max`` of the red square in epoch ``epoch``'s background."""
    x0, y0, x1, y1 = SCALES[epoch]
    w, h = x1 - x0, y1 - y0
    return (
        x0 + RED_COLUMNS[0] * w,
        y1 - RED_ROWS[1] * h,
        x0 + RED_COLUMNS[1] * w,
        y1 - RED_ROWS[0] * h,
    )


def positions(epoch: int, shift: float = 0.0) -> np.ndarray:
    """float32 ``[N, 2]`` exported positions of ``epoch`` (``shift``: a second visualizer's
    lower-left samples lie a little elsewhere)."""
    x0, y0, x1, y1 = SCALES[epoch]
    w = x1 - x0
    rng = np.random.default_rng(epoch)
    pos = np.empty((N_SAMPLES, 2))
    pos[:, 0] = x0 + w * (0.05 + 0.4 * rng.random(N_SAMPLES))
    pos[:, 1] = y0 + w * (0.05 + 0.4 * rng.random(N_SAMPLES) + shift)
    rx0, ry0, rx1, ry1 = red_region(epoch)
    pos[0] = ((rx0 + rx1) / 2, (ry0 + ry1) / 2)
    pos[1] = (x0 + w * (0.1 + 0.1 * epoch), y0 + 0.05 * w)
    return pos.astype(np.float32)


def background() -> np.ndarray:
    """uint8 ``[BG_SIDE, BG_SIDE, 3]``: white with the red square."""
    image = np.full((BG_SIDE, BG_SIDE, 3), 255, np.uint8)
    c0, c1 = (int(round(s * BG_SIDE)) for s in RED_COLUMNS)
    r0, r1 = (int(round(s * BG_SIDE)) for s in RED_ROWS)
    image[r0:r1, c0:c1] = RED
    return image


def write_run(root: Path, vis: tuple[str, ...] = ("DVI", "TimeVis")) -> Path:
    """Write the run folder and one export folder per name in ``vis``; return ``root``."""
    (root / "dataset" / "label").mkdir(parents=True)
    np.save(root / "dataset" / "label" / "labels.npy", labels())
    (root / "index.json").write_text(
        json.dumps({"train": list(range(N_TRAIN)), "test": list(range(N_TRAIN, N_SAMPLES))})
    )
    (root / "config.json").write_text(json.dumps({"dataset": {"classes": CLASSES}}))
    for epoch in EPOCHS:
        for sub, array in (
            ("representation", np.random.default_rng(epoch).random((N_SAMPLES, 4), np.float32)),
            ("prediction", logits(epoch)),
        ):
            (root / "dataset" / sub).mkdir(exist_ok=True)
            np.save(root / "dataset" / sub / f"{epoch}.npy", array)
    for k, name in enumerate(vis):
        write_export(root / "visualize" / name, shift=0.02 * k)
    return root


def write_export(folder: Path, shift: float = 0.0) -> Path:
    """One export folder (projection, scale, bgimg for every epoch) under ``folder``."""
    for sub in ("projection", "scale", "bgimg"):
        (folder / sub).mkdir(parents=True)
    for epoch in EPOCHS:
        np.save(folder / "projection" / f"{epoch}.npy", positions(epoch, shift))
        np.save(folder / "scale" / f"{epoch}.npy", np.array(SCALES[epoch], np.float32))
        Image.fromarray(background()).save(folder / "bgimg" / f"{epoch}.png")
    return folder
