"""Synthetic training runs shaped like a real classifier's, for the benchmarks.

Sample ``i`` of class ``y_i`` has, at epoch ``t`` of ``T``, the representation

    x_i(t) = s(t) c_{y_i} + U h_i(t) + noise_sigma * e_i(t),    s(t) = 0.25 + 0.75 t / T

with ``C`` class centres ``c`` (``[C, D]``, length ``CENTRE_NORM``), a fixed orthonormal
``U [D, LATENT]`` and a per-sample latent ``h_i`` that drifts as an AR(1) process
(``h(t) = sqrt(1 - drift) h(t-1) + sqrt(drift) n``): classes separate as training goes on, each
sample keeps most of its neighbours from one epoch to the next, classes overlap early and a
little at the end (so there are neighbours of different predicted classes), and the intrinsic
dimension is about ``LATENT`` (as in a network's penultimate features), not ``D``. The logits
are a linear head ``x @ W + b``, ``W = (c + HEAD_NOISE g)^T / CENTRE_NORM^2`` (``g`` drawn like
``c``), so a least-squares head recovers it exactly and backgrounds are drawn. 80/20 split.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

N_CLASSES = 10
LATENT = 32  # intrinsic dimension of the within-class spread
DRIFT = 0.1  # share of a sample's latent redrawn per epoch
NOISE_SIGMA = 0.05  # isotropic noise per dimension
HEAD_NOISE = 0.3  # how far the head's class directions are from the class centres
CENTRE_NORM = 2.5  # class centres' distance from the origin at the last epoch
TEST_FRACTION = 0.2


def labels_of(n: int, seed: int = 0) -> np.ndarray:
    """``[n]`` int64 class labels in ``0..N_CLASSES-1``."""
    return np.random.default_rng(seed).integers(0, N_CLASSES, n)


def head_of(dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centres [C, D], weight [D, C], bias [C])``, float32."""
    rng = np.random.default_rng([seed, 1])
    scale = CENTRE_NORM / np.sqrt(dim)
    centres = (rng.normal(size=(N_CLASSES, dim)) * scale).astype(np.float32)
    off = rng.normal(size=centres.shape) * scale
    weight = ((centres + HEAD_NOISE * off).T / CENTRE_NORM**2).astype(np.float32)
    bias = (0.1 * rng.normal(size=N_CLASSES)).astype(np.float32)
    return centres, weight, bias


def epoch_features(n: int, dim: int, epochs: int, seed: int = 0) -> Iterator[np.ndarray]:
    """``[n, dim]`` float32 representations of epochs ``1..epochs``, one at a time."""
    rng = np.random.default_rng([seed, 2])
    labels = labels_of(n, seed)
    centres, _, _ = head_of(dim, seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, min(LATENT, dim))))
    basis = basis.astype(np.float32)
    latent = rng.normal(size=(n, basis.shape[1])).astype(np.float32)
    for epoch in range(1, epochs + 1):
        if epoch > 1:
            fresh = rng.normal(size=latent.shape).astype(np.float32)
            latent = np.sqrt(1 - DRIFT) * latent + np.sqrt(DRIFT) * fresh
        spread = 0.25 + 0.75 * epoch / epochs
        x = spread * centres[labels] + latent @ basis.T
        x += NOISE_SIGMA * rng.standard_normal(size=x.shape, dtype=np.float32)
        yield x.astype(np.float32, copy=False)


def write_run(root: Path, epochs: int, samples: int, dim: int, seed: int = 0) -> Path:
    """Write the run folder (README "Input layout") at ``root``; one epoch in memory at a time.

    Returns:
        ``root``.
    """
    root = Path(root)
    rep_dir, pred_dir = root / "dataset/representation", root / "dataset/prediction"
    for folder in (rep_dir, pred_dir, root / "dataset/label"):
        folder.mkdir(parents=True, exist_ok=True)
    np.save(root / "dataset/label/labels.npy", labels_of(samples, seed))
    _, weight, bias = head_of(dim, seed)
    for epoch, reps in enumerate(epoch_features(samples, dim, epochs, seed), start=1):
        np.save(rep_dir / f"{epoch}.npy", reps)
        np.save(pred_dir / f"{epoch}.npy", reps @ weight + bias)
    order = np.random.default_rng([seed, 3]).permutation(samples)
    split = int(round((1 - TEST_FRACTION) * samples))
    index = {"train": np.sort(order[:split]).tolist(), "test": np.sort(order[split:]).tolist()}
    (root / "index.json").write_text(json.dumps(index))
    classes = [str(c) for c in range(N_CLASSES)]
    config = {"dataset": {"taskType": "classification", "classes": classes}}
    (root / "config.json").write_text(json.dumps(config))
    return root
