"""Simplicial complexes: k-NN graphs turned into UMAP's fuzzy simplicial set (docs/design.md §4.1).

The heavy steps are delegated: pynndescent finds neighbours, ``umap.umap_.fuzzy_simplicial_set``
builds the fuzzy set from them. What is ours is only the pruning and the flat edge arrays the
datamodules stream from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KNNGraph:
    """k nearest neighbours of every point, the point itself first.

    Attributes:
        indices: ``[N, k]`` int64 neighbour rows.
        dists: ``[N, k]`` float32 distances, ascending per row.
    """

    indices: np.ndarray
    dists: np.ndarray

    @property
    def n_neighbors(self) -> int:
        """k."""
        return self.indices.shape[1]


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


def nndescent_params(n_points: int) -> tuple[int, int]:
    """``(n_trees, n_iters)`` for pynndescent as the original tool scales them with N."""
    n_trees = min(64, 5 + int(round(math.sqrt(n_points) / 20.0)))
    n_iters = max(5, int(round(math.log2(max(n_points, 2)))))
    return n_trees, n_iters


def exact_knn(x: np.ndarray, n_neighbors: int, chunk_rows: int = 2048) -> KNNGraph:
    """Exact Euclidean k-NN by brute force, in row chunks (for small N and for tests).

    Args:
        x: ``[N, D]`` points.
        n_neighbors: k, counting the point itself (always first, even among duplicates).
        chunk_rows: rows per distance block (memory ``chunk_rows * N`` floats).
    """
    return _brute_force_knn(x, x, n_neighbors, chunk_rows, self_first=True)


def _brute_force_knn(
    data: np.ndarray, queries: np.ndarray, k: int, chunk_rows: int, self_first: bool = False
) -> KNNGraph:
    """The ``k`` nearest rows of ``data [M, D]`` to each row of ``queries [Q, D]``, exactly,
    ``chunk_rows`` queries at a time; ``self_first``: ``queries`` is ``data`` and each row is
    put first in its own list."""
    data = np.asarray(data, dtype=np.float64)
    sq_data = (data * data).sum(1)
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    dists = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], chunk_rows):
        block = np.asarray(queries[start : start + chunk_rows], dtype=np.float64)
        d2 = (block * block).sum(1)[:, None] + sq_data[None, :] - 2.0 * block @ data.T
        if self_first:
            rows = np.arange(block.shape[0])
            d2[rows, start + rows] = -1.0
        stop = start + block.shape[0]
        indices[start:stop], dists[start:stop] = _smallest(d2, k)
    return KNNGraph(indices, dists)


def _nndescent(data: np.ndarray, n_neighbors: int, metric: str, seed: int, **kwargs):
    """A pynndescent index over ``data [M, D]`` with the original tool's tree and iteration
    counts (:func:`nndescent_params`); ``kwargs`` go to ``NNDescent``."""
    from pynndescent import NNDescent

    n_trees, n_iters = nndescent_params(data.shape[0])
    return NNDescent(
        np.asarray(data, dtype=np.float32),
        n_neighbors=n_neighbors,
        metric=metric,
        n_trees=n_trees,
        n_iters=n_iters,
        random_state=seed,
        verbose=False,
        **kwargs,
    )


def _smallest(d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` smallest squared distances per row of ``d2 [R, M]``,
    ascending, and their distances (negative entries count as 0)."""
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part_d = np.take_along_axis(d2, part, 1)
    order = np.argsort(part_d, axis=1, kind="stable")
    dist = np.sqrt(np.maximum(np.take_along_axis(part_d, order, 1), 0.0))
    return np.take_along_axis(part, order, 1), dist


def query_knn(
    data: np.ndarray,
    queries: np.ndarray,
    n_neighbors: int,
    seed: int = 0,
    exact_below: int = 4096,
    chunk_rows: int = 2048,
) -> KNNGraph:
    """The ``n_neighbors`` nearest rows of ``data`` to every row of ``queries`` (Euclidean).

    Brute force in row chunks when ``data`` has fewer than ``exact_below`` rows, otherwise a
    pynndescent index over ``data`` queried with ``queries``.

    Args:
        data: ``[M, D]`` points to search, ``M >= n_neighbors``.
        queries: ``[Q, D]`` points to find neighbours for.
        n_neighbors: k.
        seed: random state of the index.
        exact_below: see above.
        chunk_rows: query rows per distance block (memory ``chunk_rows * M`` floats).

    Returns:
        :class:`KNNGraph` with ``[Q, k]`` indices into ``data`` and their distances.
    """
    m = data.shape[0]
    if n_neighbors > m:
        raise ValueError(f"n_neighbors={n_neighbors} needs at least {n_neighbors} points, got {m}")
    if m >= exact_below:
        index = _nndescent(data, n_neighbors, "euclidean", seed)
        indices, dists = index.query(np.asarray(queries, dtype=np.float32), k=n_neighbors)
        return KNNGraph(indices.astype(np.int64), dists.astype(np.float32))
    return _brute_force_knn(data, queries, n_neighbors, chunk_rows)


def nearest_neighbors(
    x: np.ndarray,
    n_neighbors: int,
    metric: str = "euclidean",
    seed: int = 0,
    exact_below: int = 4096,
) -> KNNGraph:
    """k nearest neighbours of every row of ``x`` (self included), via pynndescent.

    Args:
        x: ``[N, D]`` float points.
        n_neighbors: k, counting the point itself; must be < N.
        metric: any pynndescent metric name; ``euclidean`` is DVI's.
        seed: random state for the trees.
        exact_below: below this N, and for ``euclidean``, brute force is both exact and faster.

    Returns:
        The :class:`KNNGraph`.
    """
    n = x.shape[0]
    if n_neighbors >= n:
        raise ValueError(
            f"n_neighbors={n_neighbors} needs at least {n_neighbors + 1} points, got {n}"
        )
    if metric == "euclidean" and n < exact_below:
        return exact_knn(x, n_neighbors)
    index = _nndescent(x, n_neighbors, metric, seed, max_candidates=60)
    indices, dists = index.neighbor_graph
    return KNNGraph(indices.astype(np.int64), dists.astype(np.float32))


def fuzzy_complex(
    knn: KNNGraph,
    n_epochs_per_sample: float,
    seed: int = 0,
) -> tuple[scipy.sparse.coo_matrix, np.ndarray, np.ndarray]:
    """UMAP's fuzzy simplicial set of a k-NN graph, pruned as DVI does.

    Args:
        knn: neighbours of ``N`` points.
        n_epochs_per_sample: ``s_n_epochs``; edges lighter than ``max_weight / s_n_epochs``
            would be drawn less than once per epoch and are dropped.
        seed: passed to umap as ``random_state`` (unused with precomputed neighbours).

    Returns:
        ``(graph, sigmas, rhos)``: the symmetric ``[N, N]`` membership graph (COO) and UMAP's
        per-vertex ``sigma [N]`` and ``rho [N]``.
    """
    from umap.umap_ import fuzzy_simplicial_set

    n = knn.indices.shape[0]
    graph, sigmas, rhos = fuzzy_simplicial_set(
        X=np.zeros((n, 1), dtype=np.float32),  # unused: neighbours are precomputed
        n_neighbors=knn.n_neighbors,
        random_state=np.random.RandomState(seed),
        metric="euclidean",
        knn_indices=knn.indices,
        knn_dists=knn.dists,
    )
    graph = graph.tocoo()
    graph.sum_duplicates()
    if graph.nnz and n_epochs_per_sample > 0:
        keep = graph.data >= graph.data.max() / float(n_epochs_per_sample)
        graph = scipy.sparse.coo_matrix(
            (graph.data[keep], (graph.row[keep], graph.col[keep])), shape=graph.shape
        )
    return graph, sigmas.astype(np.float32), rhos.astype(np.float32)


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
    exact_below: int = 4096,
) -> tuple[EdgeSet, KNNGraph]:
    """The spatial complex of one epoch (§4.1): k-NN, fuzzy set, pruning, flat edges.

    Args:
        x: ``[N, D]`` training representations.
        n_neighbors: k.
        n_epochs_per_sample: ``s_n_epochs``.
        metric: k-NN metric.
        seed: random state.
        exact_below: see :func:`nearest_neighbors`.

    Returns:
        ``(edges, knn)``.
    """
    knn = nearest_neighbors(x, n_neighbors, metric=metric, seed=seed, exact_below=exact_below)
    graph, sigmas, rhos = fuzzy_complex(knn, n_epochs_per_sample, seed=seed)
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


def neighbour_preserving_rate(prev_knn: np.ndarray, curr_knn: np.ndarray) -> np.ndarray:
    """Share of each point's k-NN kept from one epoch to the next.

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
