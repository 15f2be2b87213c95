"""How many of UMAP's neighbours the visualizer's encoder keeps when regressed on UMAP's layout.

    python benchmarks/layout_regression.py RUN [--epoch 10] [--steps 20000] [--lr 1e-3]
        [--schedule cosine|step] [--standardise] [--batch 1000] [--hidden 128 128 128 128]

umap-learn lays out the epoch's training points on their (unweighted) fuzzy graph; an MLP of the
encoder's shape (``D -> hidden -> 2``, inputs centred and scaled as the visualizer's) is then
fitted to those positions by mean squared error with Adam on random batches. Prints the layout's
neighbour preserving (k = 15, ``evaluate.py``'s ``nn_train``) and, five times along the fit, the
network's: whether a network of that shape can carry the layout, and in how many steps.
``--schedule step`` drops the rate to a tenth at 3/4 of the steps (DVI's first fit), ``cosine``
anneals it to 0; ``--standardise`` fits the layout scaled to unit spread instead of UMAP's units.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ttvis.complex import fuzzy_complex
from ttvis.datamodules.edges import EdgeDataModule
from ttvis.knn import nearest_neighbours
from ttvis.layout import umap_layout
from ttvis.metrics import neighbour_preserving
from ttvis.modules.autoencoder import mlp
from ttvis.modules.losses import umap_ab
from ttvis.run import TrainingRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--epoch", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20000)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--schedule", choices=["cosine", "step"], default="cosine")
    parser.add_argument("--standardise", action="store_true")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128, 128, 128])
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    run = TrainingRun(args.run)
    reps = run.train_representations(args.epoch)
    graph, _, _ = fuzzy_complex(nearest_neighbours(reps, args.k, seed=args.seed), 0)
    layout = umap_layout(reps, graph, None, *umap_ab(1.0, 0.1), seed=args.seed)
    print(f"UMAP layout: NP {neighbour_preserving(reps, layout, args.k).mean():.2f}", flush=True)

    torch.manual_seed(args.seed)
    shift, scale = EdgeDataModule.normalisation_of(reps)  # the visualizer's own
    x = (torch.from_numpy(reps) - shift) / scale
    target = layout - layout.mean(0)
    if args.standardise:
        target = target / target.std()
    y = torch.from_numpy(target.astype(np.float32))
    net = mlp([reps.shape[1], *args.hidden, 2])
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    if args.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.steps)
    else:
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, int(0.75 * args.steps), 0.1)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = torch.randint(0, x.shape[0], (args.batch,))
        loss = ((net(x[batch]) - y[batch]) ** 2).sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % max(args.steps // 5, 1) == 0 or step == args.steps:
            with torch.no_grad():
                z = net(x).numpy()
            mse = float(((z - target) ** 2).sum(1).mean())
            kept = neighbour_preserving(reps, z, args.k).mean()
            seconds = time.perf_counter() - start
            print(f"step {step:>6d}: MSE {mse:.4f}, NP {kept:.2f} ({seconds:.0f}s)", flush=True)


if __name__ == "__main__":
    main()
