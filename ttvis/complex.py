"""Simplicial complexes: k-NN graphs turned into UMAP's fuzzy simplicial set (docs/design.md §4.1).

The heavy steps are delegated: :mod:`ttvis.knn` finds neighbours,
``umap.umap_.fuzzy_simplicial_set`` builds the fuzzy set from them. What is ours is only the
pruning and the flat edge arrays the datamodules stream from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ttvis.knn import EXACT_BELOW, KNNGraph, nearest_neighbours
from ttvis.numba_cache import prepare_numba

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeSet:
    """Weighted directed edges of a complex, ready to be sampled.

    Attributes:
        head: ``[M]`` int64 source vertex of each edge.
        tail: ``[M]`` int64 target vertex.
        weight: ``[M]`` float32 sampling probability up to scale, ``p = w / max(w)`` in (0, 1].
        sigmas: ``[N]`` float32 UMAP bandwidth per vertex (for temporal edges, §5.3).
        rhos: ``[N]`` float32 distance to the nearest neighbour per vertex.
    """

    head: np.ndarray
    tail: np.ndarray
    weight: np.ndarray
    sigmas: np.ndarray
    rhos: np.ndarray

    def __len__(self) -> int:
        return int(self.head.shape[0])

    def edges_per_epoch(self, n_epochs_per_sample: float) -> int:
        """``floor(n_epochs_per_sample * sum(p))``: draws per visualizer epoch (§4.3)."""
        return int(math.floor(n_epochs_per_sample * float(self.weight.sum(dtype=np.float64))))


def fuzzy_complex(
    knn: KNNGraph,
    n_epochs_per_sample: float,
    seed: int = 0,
    classes: np.ndarray | None = None,
    class_weight: float = 0.0,
) -> tuple[scipy.sparse.coo_matrix, np.ndarray, np.ndarray]:
    """UMAP's fuzzy simplicial set of a k-NN graph, pruned as DVI does.

    Args:
        knn: neighbours of ``N`` points.
        n_epochs_per_sample: ``s_n_epochs``; edges lighter than ``max_weight / s_n_epochs``
            would be drawn less than once per epoch and are dropped.
        seed: passed to umap as ``random_state`` (unused with precomputed neighbours).
        classes: ``[N]`` int class of each point (the subject's prediction), or None. With
            ``class_weight > 0`` the set is intersected with the classes' discrete metric
            space, as umap-learn's supervised UMAP does with a categorical target: an edge
            between two classes keeps ``exp(-2.5 / (1 - class_weight))`` of its membership
            (:func:`class_far_dist`), and local connectivity is restored.
        class_weight: umap-learn's ``target_weight`` in ``[0, 1]``; 0 ignores ``classes``.

    Returns:
        ``(graph, sigmas, rhos)``: the symmetric ``[N, N]`` membership graph (COO) and UMAP's
        per-vertex ``sigma [N]`` and ``rho [N]``.
    """
    import pynndescent
    import umap
    from umap.umap_ import fuzzy_simplicial_set

    prepare_numba(pynndescent)  # umap imports it
    prepare_numba(umap)
    n = knn.indices.shape[0]
    graph, sigmas, rhos = fuzzy_simplicial_set(
        X=np.zeros((n, 1), dtype=np.float32),  # unused: neighbours are precomputed
        n_neighbors=knn.n_neighbors,
        random_state=np.random.RandomState(seed),
        metric="euclidean",
        knn_indices=knn.indices,
        knn_dists=knn.dists,
    )
    if classes is not None and class_weight > 0:
        from umap.umap_ import discrete_metric_simplicial_set_intersection

        graph = discrete_metric_simplicial_set_intersection(
            graph.tocsr(), np.asarray(classes), far_dist=class_far_dist(class_weight)
        )
    graph = graph.tocoo()
    graph.sum_duplicates()
    if graph.nnz and n_epochs_per_sample > 0:
        keep = graph.data >= graph.data.max() / float(n_epochs_per_sample)
        graph = scipy.sparse.coo_matrix(
            (graph.data[keep], (graph.row[keep], graph.col[keep])), shape=graph.shape
        )
    return graph, sigmas.astype(np.float32), rhos.astype(np.float32)


def class_far_dist(class_weight: float) -> float:
    """umap-learn's distance between two categories for a ``target_weight`` (``UMAP.fit``):
    ``2.5 / (1 - w)``, 1e12 (classes never joined) at ``w >= 1``."""
    return 2.5 / (1.0 - class_weight) if class_weight < 1.0 else 1.0e12


def edges_from_graph(
    graph: scipy.sparse.coo_matrix, sigmas: np.ndarray, rhos: np.ndarray
) -> EdgeSet:
    """Flatten a membership graph into an :class:`EdgeSet` with ``p = w / max(w)``."""
    weight = graph.data.astype(np.float64)
    if weight.size:
        weight = weight / weight.max()
    return EdgeSet(
        head=graph.row.astype(np.int64),
        tail=graph.col.astype(np.int64),
        weight=weight.astype(np.float32),
        sigmas=sigmas,
        rhos=rhos,
    )


def spatial_complex(
    x: np.ndarray,
    n_neighbors: int,
    n_epochs_per_sample: float,
    metric: str = "euclidean",
    seed: int = 0,
    exact_below: int = EXACT_BELOW,
    init: KNNGraph | None = None,
    classes: np.ndarray | None = None,
    class_weight: float = 0.0,
) -> tuple[EdgeSet, KNNGraph]:
    """The spatial complex of one epoch (§4.1): k-NN, fuzzy set, pruning, flat edges.

    Args:
        x: ``[N, D]`` training representations.
        n_neighbors: k.
        n_epochs_per_sample: ``s_n_epochs``.
        metric: k-NN metric.
        seed: random state.
        exact_below: see :func:`ttvis.knn.knn_backend`.
        init: a k-NN graph of the same points to start NN-descent from (the previous epoch's);
            see :func:`ttvis.knn.nearest_neighbours`.
        classes, class_weight: see :func:`fuzzy_complex`.

    Returns:
        ``(edges, knn)``.
    """
    knn = nearest_neighbours(
        x, n_neighbors, metric=metric, seed=seed, exact_below=exact_below, init=init
    )
    graph, sigmas, rhos = fuzzy_complex(
        knn, n_epochs_per_sample, seed=seed, classes=classes, class_weight=class_weight
    )
    return edges_from_graph(graph, sigmas, rhos), knn


def neighbour_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, how many entries two neighbour lists share.

    Args:
        a: ``[N, k]`` int neighbour indices.
        b: ``[N, k']`` int neighbour indices of the same points.

    Returns:
        ``[N]`` int64 intersection sizes (0..min(k, k')).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    # Sort each row of b, then binary-search every entry of a in its row: O(N k log k).
    b_sorted = np.sort(b, axis=1)
    offset = (
        np.arange(a.shape[0], dtype=np.int64) * (max(a.max(initial=0), b.max(initial=0)) + 1)
    )[:, None]
    flat_b = (b_sorted + offset).ravel()
    flat_a = (a + offset).ravel()
    pos = np.searchsorted(flat_b, flat_a)
    pos = np.minimum(pos, flat_b.size - 1)
    hit = (flat_b[pos] == flat_a).reshape(a.shape)
    return hit.sum(1).astype(np.int64)


def kept_share(prev_knn: np.ndarray, curr_knn: np.ndarray) -> np.ndarray:
    """Share of each point's k-NN kept from one epoch to the next (its kept share).

    Args:
        prev_knn: ``[M, k]`` neighbour indices at epoch t-1.
        curr_knn: ``[M, k]`` neighbour indices of the same points at epoch t.

    Returns:
        ``[M]`` float64 in 0..1.
    """
    if prev_knn.shape != curr_knn.shape:
        raise ValueError(f"k-NN shapes differ: {prev_knn.shape} vs {curr_knn.shape}")
    return neighbour_overlap(prev_knn, curr_knn) / float(curr_knn.shape[1])


def combine_edges(
    spatial: EdgeSet, temporal: EdgeSet, s_n_epochs: float, t_n_epochs: float
) -> tuple[EdgeSet, int]:
    """One edge set drawing spatial edges ``s_n_epochs * sum(p_s)`` and the other set's
    edges (temporal §5, boundary §4.2) ``t_n_epochs * sum(p_t)`` times per visualizer epoch
    (in expectation).

    Returns:
        ``(edges, n_edges)``: weights ``s_n * p_s`` and ``t_n * p_t`` rescaled to a maximum of
        1, and the number of draws per visualizer epoch ``floor(s_n sum(p_s) + t_n sum(p_t))``.
        The spatial set's ``sigmas`` and ``rhos`` are kept.
    """
    ws = spatial.weight.astype(np.float64) * float(s_n_epochs)
    wt = temporal.weight.astype(np.float64) * float(t_n_epochs)
    weight = np.concatenate([ws, wt])
    n_edges = int(math.floor(weight.sum()))
    top = weight.max(initial=0.0)
    if top > 0:
        weight = weight / top
    keep = weight > 0
    edges = EdgeSet(
        head=np.concatenate([spatial.head, temporal.head])[keep],
        tail=np.concatenate([spatial.tail, temporal.tail])[keep],
        weight=weight[keep].astype(np.float32),
        sigmas=spatial.sigmas,
        rhos=spatial.rhos,
    )
    return edges, n_edges
