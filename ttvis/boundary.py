"""Boundary points and the boundary complex (docs/design.md §4.2).

A *delta-boundary point* is a representation where the subject's top two logits nearly tie:
with logits sorted descending, ``(s1 - s2) / (s1 - s_min) < delta``. They are found by mixing
pairs of nearby training samples that the subject predicts differently and bisecting the
mixing weight until the prediction flips. Training the visualizer on them (and on edges from
the data to them) teaches the encoder and decoder where the decision boundaries run, which is
where unseen samples are most easily reconstructed into the wrong class.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ttvis.complex import EdgeSet, edges_from_graph, fuzzy_complex
from ttvis.inference import batched
from ttvis.knn import EXACT_BELOW, KNNGraph, query_knn
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


def neighbour_crossing_pairs(predictions: np.ndarray, knn: KNNGraph) -> np.ndarray:
    """The k-NN edges whose ends the subject predicts differently, each unordered pair once.

    Args:
        predictions: ``[N]`` predicted class of each training point.
        knn: their k-NN graph.

    Returns:
        ``[P, 2]`` int64 point indices, sorted.
    """
    n, k = knn.indices.shape
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    cols = knn.indices.reshape(-1).astype(np.int64)
    lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
    cross = predictions[lo] != predictions[hi]
    return np.unique(np.stack([lo[cross], hi[cross]], axis=1), axis=0)


def crossing_pairs(
    predictions: np.ndarray, knn: KNNGraph, n_pairs: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of training points that the subject predicts differently, nearby ones first.

    Candidates are :func:`neighbour_crossing_pairs`; when there are fewer than ``n_pairs``,
    pairs of a random point and a random point of another predicted class fill up.

    Args:
        predictions: ``[N]`` predicted class of each training point.
        knn: their k-NN graph.
        n_pairs: how many pairs to return (fewer only when every point has the same class).
        rng: random source.

    Returns:
        ``(first [P], second [P])`` int64 indices, ``predictions[first] != predictions[second]``.
    """
    n = knn.indices.shape[0]
    pairs = neighbour_crossing_pairs(predictions, knn)
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


def bisect_weights(
    head: SubjectHead,
    first: torch.Tensor,
    second: torch.Tensor,
    n_steps: int,
) -> torch.Tensor:
    """Mixing weights ``l [P, 1]`` where the subject's prediction flips on the segments
    ``l * first + (1 - l) * second``, found by bisection.

    Args:
        head: the subject head.
        first, second: ``[P, D]`` segment ends, predicted differently.
        n_steps: bisection steps; the flip is located to ``2**-n_steps`` of the segment.

    Returns:
        ``[P, 1]`` the final brackets' midpoints, in (0, 1).
    """
    cls = head.predict(first).argmax(1)
    lo = torch.zeros(first.shape[0], 1, dtype=first.dtype, device=first.device)  # other side
    hi = torch.ones_like(lo)  # first's side
    for _ in range(n_steps):
        mid = (lo + hi) / 2
        same = (head.predict(mid * first + (1 - mid) * second).argmax(1) == cls).to(lo.device)
        hi = torch.where(same[:, None], mid, hi)
        lo = torch.where(same[:, None], lo, mid)
    return (lo + hi) / 2


def bisect_boundary(
    head: SubjectHead,
    first: torch.Tensor,
    second: torch.Tensor,
    n_steps: int,
) -> torch.Tensor:
    """Points where the subject's prediction flips on the segments between ``first`` and
    ``second`` ``[P, D]``: :func:`bisect_weights` applied -> ``[P, D]``."""
    mid = bisect_weights(head, first, second, n_steps)
    return mid * first + (1 - mid) * second


def predicted_classes(head: SubjectHead, reps: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """``reps [N, D]`` as a float32 tensor on the head's device (so bisections that index it
    never copy between devices), and the subject's predicted class of each row ``[N]``
    (int64)."""
    reps_t = torch.as_tensor(np.asarray(reps, dtype=np.float32), device=head.device)
    return reps_t, head.predict(reps_t).argmax(1).cpu().numpy()


@dataclass(frozen=True)
class FlipSegments:
    """Segments between nearby training points that the subject predicts differently, and where
    on each the prediction flips.

    Attributes:
        first, second: ``[P]`` int64 vertex indices of the segment ends.
        flip: ``[P]`` float32 mixing weight ``l`` of ``l * first + (1 - l) * second`` at the
            flip.
    """

    first: np.ndarray
    second: np.ndarray
    flip: np.ndarray

    def __len__(self) -> int:
        return int(self.first.shape[0])


def flip_segments(
    reps: np.ndarray,
    knn: KNNGraph,
    head: SubjectHead,
    n_steps: int = 12,
    batch_size: int = 16384,
) -> FlipSegments:
    """Every k-NN edge whose ends the subject predicts differently, with its flip located by
    :func:`bisect_weights`.

    Args:
        reps: ``[N, D]`` training representations.
        knn: their k-NN graph.
        head: the subject head of this epoch.
        n_steps: bisection steps per segment.
        batch_size: segments bisected at once. Up to ``N * k / 2`` segments cross early in a
            run; all at once held several ``[P, D]`` arrays (1.3 GB at 16,000 x 512).

    Returns:
        The segments (none when the subject predicts one class for all neighbours).
    """
    reps_t, predictions = predicted_classes(head, reps)
    pairs = neighbour_crossing_pairs(predictions, knn)
    first, second = pairs[:, 0], pairs[:, 1]
    if pairs.shape[0] == 0:
        return FlipSegments(first, second, np.zeros(0, np.float32))
    flip = batched(
        lambda p: bisect_weights(head, reps_t[p[:, 0]], reps_t[p[:, 1]], n_steps),
        torch.from_numpy(pairs),
        batch_size,
        device=head.device,
        dtype=torch.int64,
    )
    return FlipSegments(first, second, flip[:, 0].cpu().numpy().astype(np.float32))


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
    reps_t, predictions = predicted_classes(head, reps)
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
    exact_below: int = EXACT_BELOW,
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
        exact_below: see :func:`ttvis.knn.knn_backend`.

    Returns:
        The boundary :class:`EdgeSet` over ``N + M`` vertices.
    """
    n = reps.shape[0]
    vertices = np.concatenate([np.asarray(reps, dtype=np.float32), boundary])
    knn = query_knn(boundary, vertices, n_neighbors, seed=seed, exact_below=exact_below)
    knn = KNNGraph(knn.indices + n, knn.dists)
    graph, sigmas, rhos = fuzzy_complex(knn, n_epochs_per_sample, seed=seed)
    return edges_from_graph(graph, sigmas, rhos)
