"""What temporal preserving a run's own data allows: reference figures beside the visualizers'.

    python benchmarks/temporal_reference.py RUN [VIS ...] [--k 15]

Temporal preserving (docs/design.md §7) correlates, per training sample and over consecutive epoch
pairs, the share of its k-NN kept in the high dimension with how far it moves in 2-D. This prints
the figure a map would reach if every sample's movement were

- ``displacement``: its high-dimensional displacement ``||x_(t+1) - x_t||``;
- ``displacement, centred and scaled``: the same after centring each epoch's representations and
  dividing them by the epoch's data scale (``ttvis.temporal.data_scale``), so the growth and drift
  of the whole representation over training do not count;
- ``run's pace``: one value per epoch pair for every sample, 1 minus the pair's mean kept share
  (a map that moves samples only with the run's overall pace of change);

then each named visualizer's figure from its exported projections (``evaluate.py``'s
``temporal_train``). A visualizer near the first two moves samples about as much as their
representations move; getting past them means keeping samples whose neighbourhoods hold stiller
than their representations are.
"""

from __future__ import annotations

import argparse

import numpy as np

from ttvis.export_folder import ExportError, ExportFolder
from ttvis.metrics import (
    TemporalTracker,
    kept_share,
    knn_indices,
    temporal_correlations,
)
from ttvis.run import RunError, TrainingRun
from ttvis.temporal import data_scale


def reference_figures(
    run: TrainingRun, vis_names: list[str], k: int
) -> tuple[np.ndarray, dict[str, float]]:
    """``(kept, figures)``: ``[E - 1]`` mean share of k-NN kept over each consecutive epoch
    pair (0..1), and the temporal preserving of each reference and each visualizer, by name.

    Raises:
        ExportError: a visualizer without exports for every epoch of the run, or a broken
            projection file.
    """
    folders = {vis: ExportFolder.of(run.content_path, vis) for vis in vis_names}
    for vis, folder in folders.items():
        exported = folder.require_epochs(run.epochs)
        if exported != run.epochs:
            raise ExportError(f"{vis}: exports epochs {exported}; expected {run.epochs}")
    displacement, scaled = TemporalTracker(), TemporalTracker()
    trackers = {vis: TemporalTracker() for vis in vis_names}
    kept_shares, prev_knn = [], None
    for epoch in run.epochs:  # one epoch's representations in memory at a time
        x = run.train_representations(epoch)
        knn = knn_indices(x, k)
        displacement.add(knn, x)
        scaled.add(knn, (x - x.mean(0)) / max(data_scale(x), np.finfo(np.float32).tiny))
        for vis, tracker in trackers.items():
            projection = folders[vis].projection(epoch, run.shape.n_points)
            tracker.add(knn, projection[run.train_points])
        if prev_knn is not None:
            kept_shares.append(kept_share(prev_knn, knn))
        prev_knn = knn
    kept_shares = np.stack(kept_shares)
    pace = np.broadcast_to(1.0 - kept_shares.mean(1, keepdims=True), kept_shares.shape)
    figures = {
        "displacement": displacement.value(),
        "displacement, centred and scaled": scaled.value(),
        "run's pace": float(np.nanmean(temporal_correlations(kept_shares, np.array(pace)))),
    }
    figures.update({vis: tracker.value() for vis, tracker in trackers.items()})
    return kept_shares.mean(1), figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("content_path")
    parser.add_argument("vis", nargs="*", help="export folders under visualize/ (DVI, TimeVis)")
    parser.add_argument("--k", type=int, default=15, help="neighbours per point")
    args = parser.parse_args()
    try:
        run = TrainingRun(args.content_path, check_values=False)
        kept, figures = reference_figures(run, args.vis, args.k)
    except (RunError, ExportError) as err:
        parser.error(" ".join(str(err).splitlines()))  # one line on stderr, exit status 2

    print(f"{run.content_path}: {len(run.epochs)} epochs, {run.train_points.size} training points")
    print("mean kept share per epoch pair: " + " ".join(f"{r:.3f}" for r in kept))
    print("temporal preserving (ideal -1) if 2-D movement were:")
    for key in ("displacement", "displacement, centred and scaled", "run's pace"):
        print(f"  {key:34s} {figures[key]:7.3f}")
    for vis in args.vis:
        print(f"{vis:36s} {figures[vis]:7.3f}")


if __name__ == "__main__":
    main()
