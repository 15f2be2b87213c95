"""What temporal preserving a run's own data allows: reference figures beside the visualizers'.

    python benchmarks/temporal_reference.py RUN [VIS ...] [--k 15]

Temporal preserving (DESIGN.md §7) correlates, per training sample and over consecutive epoch
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

from ttvis.metrics import (
    TemporalTracker,
    knn_indices,
    load_projection,
    neighbour_preserving_rate,
    require_exports,
    temporal_correlations,
)
from ttvis.run import TrainingRun
from ttvis.temporal import data_scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("content_path")
    parser.add_argument("vis", nargs="*", help="export folders under visualize/ (DVI, TimeVis)")
    parser.add_argument("--k", type=int, default=15, help="neighbours per point")
    args = parser.parse_args()
    run = TrainingRun(args.content_path, check_values=False)
    for vis in args.vis:
        exported = require_exports(run, vis)
        if exported != run.epochs:
            raise SystemExit(f"{vis}: exports epochs {exported}, the run has {run.epochs}")

    displacement, scaled = TemporalTracker(), TemporalTracker()
    trackers = {vis: TemporalTracker() for vis in args.vis}
    rates, prev_knn = [], None
    for epoch in run.epochs:  # one epoch's representations in memory at a time
        x = run.train_representations(epoch)
        knn = knn_indices(x, args.k)
        displacement.add(knn, x)
        scaled.add(knn, (x - x.mean(0)) / max(data_scale(x), np.finfo(np.float32).tiny))
        for vis, tracker in trackers.items():
            tracker.add(knn, load_projection(run, vis, epoch)[run.train_points])
        if prev_knn is not None:
            rates.append(neighbour_preserving_rate(prev_knn, knn))
        prev_knn = knn
    rates = np.stack(rates)
    pace = np.broadcast_to(1.0 - rates.mean(1, keepdims=True), rates.shape)
    pace_corr = temporal_correlations(rates, np.array(pace))

    print(f"{run.content_path}: {len(run.epochs)} epochs, {run.train_points.size} training points")
    print("mean kept share per epoch pair: " + " ".join(f"{r:.3f}" for r in rates.mean(1)))
    print("temporal preserving (ideal -1) if 2-D movement were:")
    print(f"  displacement                       {displacement.value():7.3f}")
    print(f"  displacement, centred and scaled   {scaled.value():7.3f}")
    print(f"  run's pace                         {np.nanmean(pace_corr):7.3f}")
    for vis, tracker in trackers.items():
        print(f"{vis:36s} {tracker.value():7.3f}")


if __name__ == "__main__":
    main()
