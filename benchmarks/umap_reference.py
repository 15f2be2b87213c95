"""Non-parametric UMAP's neighbour preserving per epoch, beside the visualizers'.

    python benchmarks/umap_reference.py RUN [VIS ...] [--k 15] [--epochs 1 5 10] [--seed 0]
        [--predictions]

A visualizer maps every epoch through a network; non-parametric UMAP (umap-learn, default
settings, ``n_neighbors=k``) places each training sample freely and is the yardstick for how
many of the k nearest neighbours a 2-D map of these representations can keep. For every epoch
this prints UMAP's neighbour preserving on the training samples (the mean number of a sample's
k-NN that are also its 2-D k-NN, ``evaluate.py``'s ``nn_train``), the UMAP fit's seconds, and
each named visualizer's figure from its exported projection, with its share of UMAP's; last,
the means and each visualizer's lowest share and its epoch.

``--predictions`` (runs with test samples and a subject head) adds the same for test prediction
preserving (``evaluate.py``'s ``ppr_test``): beside each visualizer's, the share of test samples
that the subject predicts as most of their k nearest training samples are
(:func:`ttvis.metrics.neighbour_vote_agreement`), since a map that keeps neighbourhoods places a
test sample among those training samples.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from ttvis.boundary import predicted_classes
from ttvis.evaluation import reconstruct
from ttvis.export_folder import ExportError, ExportFolder
from ttvis.metrics import neighbour_preserving, neighbour_vote_agreement, prediction_preserving
from ttvis.run import RunError, TrainingRun
from ttvis.subject import try_load_subject_head

CPU = torch.device("cpu")


def umap_layout(reps: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``[M, 2]`` non-parametric UMAP embedding of ``reps [M, D]`` (umap-learn defaults)."""
    import umap

    return umap.UMAP(n_neighbors=k, random_state=seed).fit_transform(reps)


def reference_table(
    run: TrainingRun,
    vis_names: list[str],
    k: int,
    epochs: list[int],
    seed: int,
    predictions: bool = False,
) -> list[dict[str, float]]:
    """One row per epoch: ``{"epoch", "umap", "seconds", **{vis: nn_train}}``, with
    ``predictions`` also :func:`prediction_cells`.

    Raises:
        ExportError: a visualizer without an export for one of ``epochs``.
        RunError: ``predictions`` on a run without test samples or without a subject head.
    """
    folders = {name: ExportFolder.of(run.content_path, name) for name in vis_names}
    for folder in folders.values():
        missing = sorted(set(epochs) - set(folder.require_epochs(epochs)))
        if missing:
            raise ExportError(f"{folder.path}: no projection for epochs {missing}")
    if predictions and run.test_points.size == 0:
        raise RunError(f"{run.content_path}: --predictions needs test samples; the run has none")
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
        if predictions:
            row.update(prediction_cells(run, folders, epoch, reps, k))
        rows.append(row)
        print(format_row(row, vis_names), flush=True)
    return rows


def prediction_cells(
    run: TrainingRun,
    folders: dict[str, ExportFolder],
    epoch: int,
    train: np.ndarray,
    k: int,
    batch_size: int = 4096,
) -> dict[str, float]:
    """``{"vote": share, "ppr_test:VIS": share, ...}`` for one epoch (``train``: its ``[N, D]``
    float32 training representations): the test samples that the subject predicts as most of
    their k nearest training samples are
    (:func:`ttvis.metrics.neighbour_vote_agreement`), and each visualizer's test prediction
    preserving (``evaluate.py``'s ``ppr_test``).

    Raises:
        RunError: no subject head for ``epoch``.
    """
    head = try_load_subject_head(run, epoch, CPU)
    if head is None:
        raise RunError(f"{run.content_path}: --predictions needs a subject head for epoch {epoch}")
    test = np.asarray(run.representations(epoch)[run.test_points], dtype=np.float32)
    logits_test = head.predict(torch.from_numpy(test), batch_size)
    train_pred = predicted_classes(head, train)[1]
    cells = {
        "vote": neighbour_vote_agreement(train, train_pred, test, logits_test.argmax(1).numpy(), k)
    }
    for name, folder in folders.items():
        recon = reconstruct(folder.visualizer(epoch, CPU), test, batch_size, CPU)
        logits_recon = head.predict(recon, batch_size)
        cells[f"ppr_test:{name}"] = prediction_preserving(logits_test, logits_recon)
    return cells


def format_row(row: dict[str, float], vis_names: list[str]) -> str:
    """``epoch  umap (s)  vis (share of UMAP) ...`` for one epoch, then with ``"vote"`` in the
    row ``| vote  vis's ppr_test ...``."""
    cells = [f"{row['epoch']:>5d}", f"{row['umap']:6.2f} ({row['seconds']:4.1f}s)"]
    cells += [f"{row[n]:6.2f} ({row[n] / max(row['umap'], 1e-9):4.0%})" for n in vis_names]
    if "vote" in row:
        cells += ["|", f"{row['vote']:.3f}"] + [f"{row[f'ppr_test:{n}']:.3f}" for n in vis_names]
    return "  ".join(cells)


def summary_lines(rows: list[dict[str, float]], vis_names: list[str]) -> list[str]:
    """The means over the epochs, and each visualizer's lowest share of UMAP with its epoch."""
    keys = ["umap", *vis_names] + (["vote"] if rows and "vote" in rows[0] else [])
    keys += [f"ppr_test:{n}" for n in vis_names if rows and f"ppr_test:{n}" in rows[0]]
    lines = ["mean   " + "  ".join(f"{key} {np.mean([r[key] for r in rows]):.3f}" for key in keys)]
    for name in vis_names:
        share, epoch = min((r[name] / max(r["umap"], 1e-9), r["epoch"]) for r in rows)
        lines.append(f"{name}: lowest share of UMAP {share:.0%} (epoch {epoch})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("vis", nargs="*", help="export folders under RUN/visualize/")
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--epochs", type=int, nargs="+", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--predictions", action="store_true", help="also test prediction preserving, and the vote"
    )
    args = parser.parse_args()
    try:
        run = TrainingRun(args.run)
        epochs = args.epochs or list(run.epochs)
        print(f"{run.content_path}: neighbour preserving (train, k={args.k})")
        header = "epoch  UMAP (fit s)    " + "  ".join(f"{n} (of UMAP)" for n in args.vis)
        if args.predictions:
            header += "  |  test PP: k-NN vote  " + "  ".join(args.vis)
        print(header)
        rows = reference_table(run, args.vis, args.k, epochs, args.seed, args.predictions)
    except (RunError, ExportError) as err:
        print(f"umap_reference.py: {err}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary_lines(rows, args.vis)))


if __name__ == "__main__":
    main()
