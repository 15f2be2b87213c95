"""k nearest neighbours: the one place that decides how they are found (docs/design.md §4.1).

:func:`knn_backend` is the rule, for every caller (complexes, boundary points, metrics):

===============================  =========================================================
where, how many points            backend
===============================  =========================================================
a CUDA device (any size)          ``torch``: exact, chunked matrix products on the device
CPU, fewer than ``exact_below``   ``numpy``: exact brute force in row blocks
CPU, from ``exact_below`` on      ``nndescent`` (pynndescent, approximate) where an
                                  approximation is allowed (complexes), else ``sklearn``'s
                                  exact search (metrics)
a metric other than euclidean     ``nndescent``
===============================  =========================================================

``exact_below`` is one setting (``knn.exact_below`` in ``conf/config.yaml``, default
:data:`EXACT_BELOW`). NN-descent can start from a previous graph of the same points
(``init``): DVI starts epoch e+1's search from epoch e's k-NN.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ttvis.numba_cache import prepare_numba

log = logging.getLogger(__name__)
EXACT_BELOW = 10_000  # default of knn.exact_below: exact brute force below this many points
BLOCK_BYTES = 256 * 2**20  # one block of squared distances (float64) in the exact searches
# NN-descent searches this many more neighbours than asked and keeps the nearest: on 20,000 x
# 512 synthetic features (benchmarks/knn_scale.py) recall 0.954 -> 0.975 from scratch (+10%
# time), and 0.945 -> 0.964 when started from the previous epoch's graph (2.3 s against 3.8 s
# from scratch).
NNDESCENT_EXTRA = 5
TORCH = "torch"
NUMPY = "numpy"
SKLEARN = "sklearn"
NNDESCENT = "nndescent"


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


def default_device() -> torch.device:
    """This process's GPU when CUDA is available (``cuda:LOCAL_RANK`` under DDP), else CPU."""
    if torch.cuda.is_available():
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", rank % torch.cuda.device_count())
    return torch.device("cpu")


def knn_backend(
    n_points: int,
    exact_below: int = EXACT_BELOW,
    device: str | torch.device | None = None,
    approximate: bool = True,
    metric: str = "euclidean",
) -> str:
    """How the neighbours among ``n_points`` points are found (the table in the module doc).

    Args:
        n_points: M, the points searched.
        exact_below: on CPU, brute force below this M.
        device: where to search; None: :func:`default_device`.
        approximate: whether an approximate search (NN-descent) is acceptable.
        metric: the distance; only ``euclidean`` has exact backends.

    Returns:
        One of :data:`TORCH`, :data:`NUMPY`, :data:`SKLEARN`, :data:`NNDESCENT`.
    """
    if metric != "euclidean":
        return NNDESCENT
    device = default_device() if device is None else torch.device(device)
    if device.type == "cuda":
        return TORCH
    if n_points < exact_below:
        return NUMPY
    return NNDESCENT if approximate else SKLEARN


def nndescent_params(n_points: int) -> tuple[int, int]:
    """``(n_trees, n_iters)`` for pynndescent as the original tool scales them with N."""
    n_trees = min(64, 5 + int(round(math.sqrt(n_points) / 20.0)))
    n_iters = max(5, int(round(math.log2(max(n_points, 2)))))
    return n_trees, n_iters


def block_rows(n_cols: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Query rows per block so that ``rows x n_cols`` float64 distances fit ``block_bytes``."""
    return max(1, block_bytes // (8 * max(n_cols, 1)))


def exact_knn(
    x: np.ndarray, n_neighbors: int, chunk_rows: int | None = None, device=None
) -> KNNGraph:
    """Exact Euclidean k-NN of every row of ``x``, the point itself first (even among
    duplicates): brute force on the device (:data:`TORCH`) or in numpy row blocks.

    Args:
        x: ``[N, D]`` points.
        n_neighbors: k, counting the point itself.
        chunk_rows: query rows per distance block; None: :func:`block_rows`.
        device: None: :func:`default_device`; ``cpu`` uses numpy.

    Returns:
        :class:`KNNGraph` with ``[N, k]`` indices and float32 distances.
    """
    device = default_device() if device is None else torch.device(device)
    if device.type == "cpu":
        return brute_force_knn(x, x, n_neighbors, chunk_rows, self_first=True)
    return torch_knn(x, x, n_neighbors, device, chunk_rows, self_first=True)


def brute_force_knn(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    chunk_rows: int | None = None,
    self_first: bool = False,
) -> KNNGraph:
    """The ``k`` nearest rows of ``data [M, D]`` to each row of ``queries [Q, D]``, exactly, in
    float64 numpy blocks of ``chunk_rows`` queries; ``self_first``: ``queries`` is ``data`` and
    each row is put first in its own list. The reference every other backend is tested against.
    """
    data = np.asarray(data, dtype=np.float64)
    chunk_rows = chunk_rows or block_rows(data.shape[0])
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


def _smallest(d2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` smallest squared distances per row of ``d2 [R, M]``,
    ascending, and their distances (negative entries count as 0)."""
    part = np.argpartition(d2, k - 1, axis=1)[:, :k]
    part_d = np.take_along_axis(d2, part, 1)
    order = np.argsort(part_d, axis=1, kind="stable")
    dist = np.sqrt(np.maximum(np.take_along_axis(part_d, order, 1), 0.0))
    return np.take_along_axis(part, order, 1), dist


def torch_knn(
    data: np.ndarray,
    queries: np.ndarray,
    k: int,
    device: str | torch.device,
    chunk_rows: int | None = None,
    self_first: bool = False,
) -> KNNGraph:
    """:func:`brute_force_knn` on a torch device: float64 matrix products and ``topk`` in
    blocks of ``chunk_rows`` queries (all of ``data`` is held on the device, ``[M, D]``
    float64; a block is ``chunk_rows x M`` float64). Same arguments; results on the CPU."""
    device = torch.device(device)
    table = torch.as_tensor(np.asarray(data), device=device).to(torch.float64)
    sq_data = (table * table).sum(1)
    chunk_rows = chunk_rows or block_rows(table.shape[0])
    indices = np.empty((queries.shape[0], k), dtype=np.int64)
    dists = np.empty((queries.shape[0], k), dtype=np.float32)
    for start in range(0, queries.shape[0], chunk_rows):
        block = torch.as_tensor(np.asarray(queries[start : start + chunk_rows]), device=device)
        block = block.to(torch.float64)
        d2 = (block * block).sum(1)[:, None] + sq_data[None, :] - 2.0 * block @ table.T
        if self_first:
            rows = torch.arange(block.shape[0], device=device)
            d2[rows, start + rows] = -1.0
        top_d2, top = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        stop = start + block.shape[0]
        indices[start:stop] = top.cpu().numpy()
        dists[start:stop] = top_d2.clamp_min(0.0).sqrt().cpu().numpy()
    return KNNGraph(indices, dists)


def _nndescent(data: np.ndarray, n_neighbors: int, metric: str, seed: int, **kwargs):
    """A pynndescent index over ``data [M, D]`` with the original tool's tree and iteration
    counts (:func:`nndescent_params`); ``kwargs`` go to ``NNDescent``."""
    import pynndescent

    prepare_numba(pynndescent)
    n_trees, n_iters = nndescent_params(data.shape[0])
    return pynndescent.NNDescent(
        np.asarray(data, dtype=np.float32),
        n_neighbors=n_neighbors,
        metric=metric,
        n_trees=n_trees,
        n_iters=n_iters,
        random_state=seed,
        verbose=False,
        **kwargs,
    )


def nearest_neighbours(
    x: np.ndarray,
    n_neighbors: int,
    metric: str = "euclidean",
    seed: int = 0,
    exact_below: int = EXACT_BELOW,
    device: str | torch.device | None = None,
    init: KNNGraph | None = None,
) -> KNNGraph:
    """k nearest neighbours of every row of ``x`` (self included), by :func:`knn_backend`.

    Args:
        x: ``[N, D]`` float points.
        n_neighbors: k, counting the point itself; must be < N.
        metric: any pynndescent metric name; ``euclidean`` is DVI's.
        seed: random state for the trees.
        exact_below: see :func:`knn_backend`.
        device: see :func:`knn_backend`.
        init: a k-NN graph of the same N points (e.g. the previous epoch's); NN-descent starts
            from it instead of from random projection trees. Exact backends ignore it.
            NN-descent searches :data:`NNDESCENT_EXTRA` more neighbours and keeps the k
            nearest.

    Returns:
        The :class:`KNNGraph`. The time taken is logged (INFO, with ``extra={"seconds": s}``).
    """
    n = x.shape[0]
    if n_neighbors >= n:
        raise ValueError(
            f"n_neighbors={n_neighbors} needs at least {n_neighbors + 1} points, got {n}"
        )
    start = time.perf_counter()
    backend = knn_backend(n, exact_below, device, approximate=True, metric=metric)
    warm = init is not None and init.indices.shape == (n, n_neighbors)
    if backend != NNDESCENT:
        knn = exact_knn(x, n_neighbors, device=torch.device("cpu") if backend == NUMPY else device)
    else:
        search = min(n_neighbors + NNDESCENT_EXTRA, n - 1)
        extra = {}
        if warm:  # the previous neighbours first, the extra ones unknown (-1)
            extra["init_graph"] = np.full((n, search), -1, dtype=np.int64)
            extra["init_graph"][:, :n_neighbors] = init.indices
        index = _nndescent(x, search, metric, seed, max_candidates=60, **extra)
        indices, dists = index.neighbor_graph
        knn = KNNGraph(
            indices[:, :n_neighbors].astype(np.int64), dists[:, :n_neighbors].astype(np.float32)
        )
    seconds = time.perf_counter() - start
    started = " from the previous graph" if warm and backend == NNDESCENT else ""
    log.info(
        "k-NN of %d points (%s%s): %.1fs", n, backend, started, seconds, extra={"seconds": seconds}
    )
    return knn


def query_knn(
    data: np.ndarray,
    queries: np.ndarray,
    n_neighbors: int,
    seed: int = 0,
    exact_below: int = EXACT_BELOW,
    chunk_rows: int | None = None,
    device: str | torch.device | None = None,
    approximate: bool = True,
) -> KNNGraph:
    """The ``n_neighbors`` nearest rows of ``data`` to every row of ``queries`` (Euclidean),
    by :func:`knn_backend`.

    Args:
        data: ``[M, D]`` points to search, ``M >= n_neighbors``.
        queries: ``[Q, D]`` points to find neighbours for.
        n_neighbors: k.
        seed: random state of a pynndescent index.
        exact_below: see :func:`knn_backend`.
        chunk_rows: query rows per distance block of the exact backends.
        device: see :func:`knn_backend`.
        approximate: False: always exact (scikit-learn's search on CPU from ``exact_below``).

    Returns:
        :class:`KNNGraph` with ``[Q, k]`` indices into ``data`` and their distances.
    """
    m = data.shape[0]
    if n_neighbors > m:
        raise ValueError(f"n_neighbors={n_neighbors} needs at least {n_neighbors} points, got {m}")
    backend = knn_backend(m, exact_below, device, approximate=approximate)
    if backend == TORCH:
        device = default_device() if device is None else device
        return torch_knn(data, queries, n_neighbors, device, chunk_rows)
    if backend == NUMPY:
        return brute_force_knn(data, queries, n_neighbors, chunk_rows)
    if backend == SKLEARN:
        from sklearn.neighbors import NearestNeighbors

        index = NearestNeighbors(n_neighbors=n_neighbors).fit(np.asarray(data, np.float32))
        dists, indices = index.kneighbors(np.asarray(queries, dtype=np.float32))
        return KNNGraph(indices.astype(np.int64), dists.astype(np.float32))
    index = _nndescent(data, n_neighbors, "euclidean", seed)
    indices, dists = index.query(np.asarray(queries, dtype=np.float32), k=n_neighbors)
    return KNNGraph(indices.astype(np.int64), dists.astype(np.float32))
