"""Boundary points and the boundary complex (DESIGN.md §4.2).

A *delta-boundary point* is a representation where the subject's top two logits nearly tie:
with logits sorted descending, ``(s1 - s2) / (s1 - s_min) < delta``. They are found by mixing
pairs of nearby training samples that the subject predicts differently and bisecting the
mixing weight until the prediction flips. Training the visualizer on them (and on edges from
the data to them) teaches the encoder and decoder where the decision boundaries run, which is
where unseen samples are most easily reconstructed into the wrong class.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ttvis.complex import EdgeSet, KNNGraph, edges_from_graph, fuzzy_complex, query_knn
from ttvis.subject import SubjectHead

log = logging.getLogger(__name__)


def boundary_gap(logits: torch.Tensor) -> torch.Tensor:
    """How far each row of ``logits [M, C]`` is from a tie of its top two classes -> ``[M]``
    in [0, 1], 0 on the boundary.

    ``(s1 - s2) / (s1 - s_min)`` with the logits sorted descending (DVI's delta-boundary
    measure; 0 for rows whose logits are all equal). With two classes ``s_min = s2`` makes
    that ratio always 1, so there it is the softmax probability gap ``|p1 - p2|`` instead.
    """
    top = torch.topk(logits, 2, dim=1).values
    if logits.shape[1] == 2:
        return torch.tanh((top[:, 0] - top[:, 1]) / 2)
    span = top[:, 0] - logits.min(dim=1).values
    return torch.where(span > 0, (top[:, 0] - top[:, 1]) / span.clamp_min(1e-30), 0.0)


def crossing_pairs(
    predictions: np.ndarray, knn: KNNGraph, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of training points that the subject predicts differently, nearby ones first.

    Candidates are the k-NN edges whose ends are predicted differently (each unordered pair
    once); when there are fewer than ``n_pairs``, pairs of a random point and a random point of
    another predicted class fill up.

    Args:
        predictions: ``[N]`` predicted class of each training point.
        knn: their k-NN graph.
        n_pairs: how many pairs to return (fewer only when every point has the same class).
        rng: random source.

    Returns:
        ``(first [P], second [P])`` int64 indices, ``predictions[first] != predictions[second]``.
    """
    n, k = knn.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = knn.indices.reshape(-1)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)  # each unordered pair once
    cross = predictions[lo] != predictions[hi]
    pairs = np.unique(np.stack([lo[cross], hi[cross]], axis=1), axis=0)
    if pairs.shape[0] > n_pairs:
        pairs = pairs[rng.choice(pairs.shape[0], n_pairs, replace=False)]
    elif pairs.shape[0] < n_pairs and np.unique(predictions).size > 1:
        # Partners drawn uniformly among the points of other classes: in class-sorted order,
        # draw a position outside the first point's class block.
        order = np.argsort(predictions, kind="stable")
        classes, starts, counts = np.unique(
            predictions[order], return_index=True, return_counts=True
        )
        eligible = np.flatnonzero(counts[np.searchsorted(classes, predictions)] < n)
        first = rng.choice(eligible, n_pairs - pairs.shape[0])
        block = np.searchsorted(classes, predictions[first])
        pos = rng.integers(0, n - counts[block])
        pos = np.where(pos >= starts[block], pos + counts[block], pos)
        extra = np.stack([first, order[pos]], axis=1).astype(np.int64)
        pairs = np.concatenate([pairs, extra])
    return pairs[:, 0], pairs[:, 1]


def bisect_boundary(
    head: SubjectHead,
    first: torch.Tensor,
    second: torch.Tensor,
    n_steps: int,
) -> torch.Tensor:
    """Points where the subject's prediction flips on the segments between ``first`` and
    ``second``, by bisection on the mixing weight ``l`` of ``l * first + (1 - l) * second``.

    Args:
        head: the subject head.
        first, second: ``[P, D]`` segment ends, predicted differently.
        n_steps: bisection steps; the flip is located to ``2**-n_steps`` of the segment.

    Returns:
        ``[P, D]`` the mixes at the final bracket's midpoint.
    """
    cls = head.predict(first).argmax(1)
    lo = torch.zeros(first.shape[0], 1, dtype=first.dtype, device=first.device)  # other side
    hi = torch.ones_like(lo)  # first's side
    for _ in range(n_steps):
        mid = (lo + hi) / 2
        same = (head.predict(mid * first + (1 - mid) * second).argmax(1) == cls).to(lo.device)
        hi = torch.where(same[:, None], mid, hi)
        lo = torch.where(same[:, None], lo, mid)
    mid = (lo + hi) / 2
    return mid * first + (1 - mid) * second


def boundary_points(
    reps: np.ndarray,
    knn: KNNGraph,
    head: SubjectHead,
    n_points: int,
    delta: float = 0.1,
    n_steps: int = 12,
    seed: int = 0,
) -> np.ndarray:
    """Delta-boundary points between nearby differently-predicted training samples (§4.2).

    Args:
        reps: ``[N, D]`` training representations.
        knn: their k-NN graph (nearby pairs are mixed first).
        head: the subject head of this epoch.
        n_points: pairs to bisect; the points whose gap is not below ``delta`` are dropped.
        delta: largest accepted normalised top-1/top-2 logit gap.
        n_steps: bisection steps per pair.
        seed: random source for choosing pairs.

    Returns:
        ``[M, D]`` float32 boundary points, ``M <= n_points`` (0 rows when the subject predicts
        one class for every sample).
    """
    reps_t = torch.as_tensor(np.asarray(reps, dtype=np.float32))
    predictions = head.predict(reps_t).argmax(1).cpu().numpy()
    first, second = crossing_pairs(predictions, knn, n_points, np.random.default_rng(seed))
    if first.size == 0:
        return np.zeros((0, reps.shape[1]), dtype=np.float32)
    points = bisect_boundary(head, reps_t[first], reps_t[second], n_steps)
    gap = boundary_gap(head.predict(points))
    keep = (gap < delta).cpu().numpy()
    return points.cpu().numpy()[keep].astype(np.float32)


def boundary_complex(
    reps: np.ndarray,
    boundary: np.ndarray,
    n_neighbors: int,
    n_epochs_per_sample: float,
    seed: int = 0,
    exact_below: int = 10000,
) -> EdgeSet:
    """Edges from every training point and every boundary point to its nearest boundary points,
    fuzzy-set and pruned like the spatial complex (§4.2).

    Vertices are numbered ``0..N-1`` for ``reps`` and ``N..N+M-1`` for ``boundary``.

    Args:
        reps: ``[N, D]`` training representations.
        boundary: ``[M, D]`` boundary points, ``M > n_neighbors``.
        n_neighbors: boundary neighbours per vertex.
        n_epochs_per_sample: ``b_n_epochs``, for the pruning threshold.
        seed: random state.
        exact_below: see :func:`ttvis.complex.query_knn`.

    Returns:
        The boundary :class:`EdgeSet` over ``N + M`` vertices.
    """
    n = reps.shape[0]
    vertices = np.concatenate([np.asarray(reps, dtype=np.float32), boundary])
    knn = query_knn(boundary, vertices, n_neighbors, seed=seed, exact_below=exact_below)
    knn = KNNGraph(knn.indices + n, knn.dists)
    graph, sigmas, rhos = fuzzy_complex(knn, n_epochs_per_sample, seed=seed)
    return edges_from_graph(graph, sigmas, rhos)
