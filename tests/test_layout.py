"""UMAP layout targets (docs/design.md §4.4): umap-learn's layout of the complex."""

import numpy as np

from ttvis.complex import fuzzy_complex
from ttvis.knn import nearest_neighbours
from ttvis.layout import umap_layout
from ttvis.metrics import neighbour_preserving
from ttvis.modules.losses import umap_ab


def blobs(n_per: int = 60, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated Gaussian clusters, ``[3 n_per, dim]``, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=20.0, size=(3, dim))
    labels = np.repeat(np.arange(3), n_per)
    return (centres[labels] + rng.normal(size=(labels.size, dim))).astype(np.float32), labels


def graph_of(x: np.ndarray):
    knn = nearest_neighbours(x, 10)
    graph, _, _ = fuzzy_complex(knn, 0)
    return graph


def test_spectral_layout_separates_clusters_and_keeps_neighbours():
    x, labels = blobs()
    a, b = umap_ab()
    layout = umap_layout(x, graph_of(x), 200, a, b, seed=0)
    assert layout.shape == (x.shape[0], 2) and layout.dtype == np.float32
    # Every sample is nearer its own cluster's 2-D centre than any other's.
    centres = np.stack([layout[labels == c].mean(0) for c in range(3)])
    nearest = np.linalg.norm(layout[:, None] - centres[None], axis=2).argmin(1)
    assert (nearest == labels).all()
    random = np.random.default_rng(0).normal(size=layout.shape)
    assert (
        neighbour_preserving(x, layout, 10).mean() > 2 * neighbour_preserving(x, random, 10).mean()
    )


def test_layout_targets_reach_the_first_fit_only(demo_run):
    """The first subject epoch's batches carry the layout; a warm epoch's do not."""
    from ttvis.datamodules import DVIDataModule
    from ttvis.run import TrainingRun

    run = TrainingRun(demo_run)
    first = DVIDataModule(run, run.epochs[0], lambda_layout=0.1, layout_epochs=50, batch_size=256)
    first.build()
    assert first.layout.shape == (len(run.train_points), 2)
    assert "layout" in first.stream_spec()[3]
    positions = first.layout.copy()
    warm = DVIDataModule(
        run,
        run.epochs[1],
        lambda_layout=0.1,
        layout_epochs=50,
        prev_knn=first.knn,
        prev_positions=positions,
    )
    warm.build()
    assert warm.layout is None and "layout" not in warm.stream_spec()[3]
