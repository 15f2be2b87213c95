"""Non-parametric UMAP's neighbour preserving per epoch, beside the visualizers'.

    python benchmarks/umap_reference.py RUN [VIS ...] [--k 15] [--epochs 1 5 10] [--seed 0]

A visualizer maps every epoch through a network; non-parametric UMAP (umap-learn, default
settings, ``n_neighbors=k``) places each training sample freely and is the yardstick for how
many of the k nearest neighbours a 2-D map of these representations can keep. For every epoch
this prints UMAP's neighbour preserving on the training samples (the mean number of a sample's
k-NN that are also its 2-D k-NN, ``evaluate.py``'s ``nn_train``), the UMAP fit's seconds, and
each named visualizer's figure from its exported projection, with its share of UMAP's.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ttvis.export_folder import ExportError, ExportFolder
from ttvis.metrics import neighbour_preserving
from ttvis.run import RunError, TrainingRun


def umap_layout(reps: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``[M, 2]`` non-parametric UMAP embedding of ``reps [M, D]`` (umap-learn defaults)."""
    import umap

    return umap.UMAP(n_neighbors=k, random_state=seed).fit_transform(reps)


def reference_table(
    run: TrainingRun, vis_names: list[str], k: int, epochs: list[int], seed: int
) -> list[dict[str, float]]:
    """One row per epoch: ``{"epoch", "umap", "seconds", **{vis: nn_train}}``.

    Raises:
        ExportError: a visualizer without an export for one of ``epochs``.
    """
    folders = {name: ExportFolder.of(run.content_path, name) for name in vis_names}
    for folder in folders.values():
        missing = sorted(set(epochs) - set(folder.require_epochs(epochs)))
        if missing:
            raise ExportError(f"{folder.path}: no projection for epochs {missing}")
    rows = []
    for epoch in epochs:
        reps = np.asarray(run.train_representations(epoch), dtype=np.float32)
        start = time.perf_counter()
        layout = umap_layout(reps, k, seed)
        row = {"epoch": epoch, "seconds": time.perf_counter() - start}
        row["umap"] = float(neighbour_preserving(reps, layout, k).mean())
        for name in vis_names:
            low = folders[name].projection(epoch, run.shape.n_points)[run.train_points]
            row[name] = float(neighbour_preserving(reps, low, k).mean())
        rows.append(row)
        print(format_row(row, vis_names), flush=True)
    return rows


def format_row(row: dict[str, float], vis_names: list[str]) -> str:
    """``epoch  umap (s)  vis (share of UMAP) ...`` for one epoch."""
    cells = [f"{row['epoch']:>5d}", f"{row['umap']:6.2f} ({row['seconds']:4.1f}s)"]
    cells += [f"{row[n]:6.2f} ({row[n] / max(row['umap'], 1e-9):4.0%})" for n in vis_names]
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("vis", nargs="*", help="export folders under RUN/visualize/")
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--epochs", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        run = TrainingRun(args.run)
        epochs = args.epochs or list(run.epochs)
        print(f"{run.content_path}: neighbour preserving (train, k={args.k})")
        print("epoch  UMAP (fit s)    " + "  ".join(f"{n} (of UMAP)" for n in args.vis))
        rows = reference_table(run, args.vis, args.k, epochs, args.seed)
    except (RunError, ExportError) as err:
        print(f"umap_reference.py: {err}", file=sys.stderr)
        sys.exit(2)
    means = {n: np.mean([r[n] for r in rows]) for n in ["umap", *args.vis]}
    print("mean   " + "  ".join(f"{n} {v:.2f}" for n, v in means.items()))


if __name__ == "__main__":
    main()
