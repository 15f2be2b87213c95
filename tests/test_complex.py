"""k-NN, neighbour overlap and the spatial complex against plain brute-force computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttvis.complex import fuzzy_complex, neighbour_overlap, spatial_complex
from ttvis.knn import exact_knn, nearest_neighbours

K = 10


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def brute_knn(points) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy k-NN: full distance matrix, stable argsort, self first."""
    x = points.astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :K]
    return idx, np.take_along_axis(d, idx, 1)


def test_exact_knn_matches_brute_force(points, brute_knn):
    idx, dist = brute_knn
    knn = exact_knn(points, K, chunk_rows=37)  # several chunks, last one partial
    assert knn.indices.shape == (200, K) and knn.indices.dtype == np.int64
    assert knn.dists.dtype == np.float32
    assert knn.n_neighbors == K
    np.testing.assert_array_equal(knn.indices[:, 0], np.arange(200))
    np.testing.assert_array_equal(knn.indices, idx)
    np.testing.assert_allclose(knn.dists, dist, rtol=1e-5, atol=1e-5)
    assert (np.diff(knn.dists, axis=1) >= 0).all()


def test_exact_knn_puts_self_first_with_duplicates():
    x = np.zeros((5, 3), np.float32)  # all points coincide
    knn = exact_knn(x, 3)
    np.testing.assert_array_equal(knn.indices[:, 0], np.arange(5))
    assert (knn.dists == 0).all()


def test_nearest_neighbours_small_n_is_exact(points, brute_knn):
    knn = nearest_neighbours(points, K)  # below exact_below: brute force
    np.testing.assert_array_equal(knn.indices, brute_knn[0])


def test_nearest_neighbours_pynndescent_agrees(points, brute_knn):
    knn = nearest_neighbours(points, K, exact_below=0, device="cpu")  # force pynndescent
    assert knn.indices.shape == (200, K)
    agree = neighbour_overlap(knn.indices, brute_knn[0]).sum() / brute_knn[0].size
    assert agree >= 0.99, f"pynndescent found only {agree:.3f} of the exact neighbours"
    np.testing.assert_array_equal(knn.indices[:, 0], np.arange(200))


def test_nearest_neighbours_needs_more_points_than_k(points):
    with pytest.raises(ValueError, match="at least 11 points"):
        nearest_neighbours(points[:10], 10)


def test_neighbour_overlap_matches_set_intersections():
    rng = np.random.default_rng(1)
    n, k_a, k_b, universe = 300, 7, 12, 40
    a = np.stack([rng.choice(universe, k_a, replace=False) for _ in range(n)])
    b = np.stack([rng.choice(universe, k_b, replace=False) for _ in range(n)])
    for i in range(50):  # some rows of b contain all of a's row
        rest = rng.permutation(np.setdiff1d(np.arange(universe), a[i]))[: k_b - k_a]
        b[i] = rng.permutation(np.concatenate([a[i], rest]))
    assert all(len(set(row)) == k_b for row in b.tolist())
    expected = [len(set(ra) & set(rb)) for ra, rb in zip(a, b, strict=True)]
    got = neighbour_overlap(a, b)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    assert got.max() == k_a and got.min() >= 0
    np.testing.assert_array_equal(neighbour_overlap(b, a), expected)


def test_neighbour_overlap_large_indices():
    a = np.array([[10_000_000, 3], [5, 6]])
    b = np.array([[3, 9_999_999], [6, 10_000_000]])
    np.testing.assert_array_equal(neighbour_overlap(a, b), [1, 1])


@pytest.mark.parametrize("s_n_epochs", [5.0, 2.5])
def test_spatial_complex_edges(points, brute_knn, s_n_epochs):
    edges, knn = spatial_complex(points, K, s_n_epochs)
    np.testing.assert_array_equal(knn.indices, brute_knn[0])
    n = points.shape[0]
    assert len(edges) == edges.head.size == edges.tail.size == edges.weight.size > 0
    assert edges.sigmas.shape == (n,) and edges.rhos.shape == (n,)
    assert edges.head.dtype == np.int64 and edges.weight.dtype == np.float32

    # Weights are p = w / max(w) in (0, 1], maximum exactly 1; no self loops.
    assert (edges.weight > 0).all() and (edges.weight <= 1).all()
    assert edges.weight.max() == pytest.approx(1.0)
    assert (edges.head != edges.tail).all()

    # Symmetric membership graph: every (i, j, w) has its (j, i, w).
    table = {
        (int(h), int(t)): float(w)
        for h, t, w in zip(edges.head, edges.tail, edges.weight, strict=True)
    }
    assert len(table) == len(edges), "duplicate edges"
    for (h, t), w in table.items():
        assert table.get((t, h)) == pytest.approx(w)

    # Every edge joins k-nearest neighbours (in one direction at least).
    neigh = [set(row) for row in knn.indices.tolist()]
    assert all(t in neigh[h] or h in neigh[t] for h, t in table)

    # Pruning: exactly the unpruned edges with w >= max(w) / s_n_epochs survive.
    full, _, _ = fuzzy_complex(knn, 0)  # 0: no pruning
    full_w = full.data / full.data.max()
    kept = {
        (int(h), int(t))
        for h, t, w in zip(full.row, full.col, full_w, strict=True)
        if w >= 1.0 / s_n_epochs - 1e-6
    }
    assert set(table) == kept
    assert full.nnz > len(edges), "nothing was pruned: the test would not see pruning"
    assert edges.weight.min() >= 1.0 / s_n_epochs - 1e-6

    # Draws per visualizer epoch.
    expected = math.floor(s_n_epochs * float(np.sum(edges.weight, dtype=np.float64)))
    assert edges.edges_per_epoch(s_n_epochs) == expected
    assert edges.edges_per_epoch(1) == math.floor(float(np.sum(edges.weight, dtype=np.float64)))


@pytest.mark.parametrize("class_weight", [0.5, 0.8])
def test_class_separation_is_umaps_supervised_graph(points, brute_knn, class_weight):
    """``fuzzy_complex`` with classes is the graph umap-learn's supervised fit builds from the
    same data and a categorical target of the same weight."""
    import umap

    from ttvis.knn import KNNGraph

    classes = np.random.default_rng(1).integers(0, 4, size=points.shape[0])
    knn = KNNGraph(brute_knn[0], brute_knn[1].astype(np.float32))
    ours, _, _ = fuzzy_complex(knn, 0, classes=classes, class_weight=class_weight)
    fitted = umap.UMAP(n_neighbors=K, target_weight=class_weight, n_epochs=10, random_state=0)
    reference = fitted.fit(points, y=classes).graph_.toarray()
    # umap-learn's layout prunes light memberships of its graph in place: compare the rest.
    heavy = ours.toarray() >= ours.max() / 10
    assert heavy.sum() > 500
    np.testing.assert_allclose(ours.toarray()[heavy], reference[heavy], rtol=1e-5)

    plain, _, _ = fuzzy_complex(knn, 0)
    plain, ours = plain.toarray(), ours.toarray()
    across = (classes[:, None] != classes[None, :]) & (plain > 0)
    within = (classes[:, None] == classes[None, :]) & (plain > 0)
    # Edges across classes lose most of their membership; those within keep theirs.
    assert ours[across].mean() < 0.2 * ours[within].mean()
    assert (ours[within] / plain[within]).mean() > 0.5
