"""Quality metrics of a trained visualizer (docs/design.md §7).

Pure functions on arrays; :func:`ttvis.evaluation.evaluate_visualization` runs them over every
exported epoch of a run folder, and :mod:`ttvis.metrics_report` prints and logs the results:

=========================  ==================================================  =====
metric                     definition                                          ideal
=========================  ==================================================  =====
neighbour preserving       mean ``|kNN_high(i) ∩ kNN_low(i)|`` (0..k)           k
boundary preserving        the same, neighbours taken among boundary points     k
                           (:mod:`ttvis.boundary`) projected by the encoder
prediction preserving      share of samples with ``argmax h(g(f(x))) ==          1
                           argmax h(x)`` (h the subject head)
inverse confidence drop    mean ``|softmax(h(x))[c] - softmax(h(g(f(x))))[c]|``  0
                           with ``c = argmax h(x)``
temporal preserving        per sample, Pearson correlation over consecutive     -1
                           epoch pairs between the high-dimensional kept
                           share of k-NN and the 2-D movement
=========================  ==================================================  =====

:func:`neighbour_vote_agreement` is a reference, not a visualizer's metric: how many test
samples the subject predicts as most of their training neighbours are.

k-NN lists never contain the point itself and are exact (:func:`ttvis.knn.knn_backend` with no
approximation: brute force on a GPU or below ``exact_below`` points, scikit-learn's exact search
above), so every number is deterministic.
Test-set variants follow the original DVI tool: a test sample's neighbours are searched among
train ∪ test points, and only the test rows are scored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from ttvis.complex import kept_share, neighbour_overlap
from ttvis.knn import EXACT_BELOW, SKLEARN, exact_knn, knn_backend, query_knn

log = logging.getLogger(__name__)
PER_EPOCH_KEYS = (
    "nn_train",
    "nn_test",
    "bp_train",
    "bp_test",
    "ppr_train",
    "ppr_test",
    "icd_train",
    "icd_test",
)


# ------------------------------------------------------------------ k-NN


def knn_indices(
    x: np.ndarray,
    k: int,
    rows: np.ndarray | None = None,
    exact_below: int = EXACT_BELOW,
) -> np.ndarray:
    """Exact Euclidean k nearest neighbours of points of ``x``, the point itself excluded.

    Args:
        x: ``[M, D]`` points.
        k: neighbours per point; needs ``k < M``.
        rows: ``[R]`` row indices of the query points (their neighbours are still searched
            among all M points); None queries every row.
        exact_below: on CPU, below this M :func:`ttvis.knn.exact_knn` (dense blocks); from
            it on scikit-learn's exact ``NearestNeighbors`` (:func:`ttvis.knn.knn_backend`).

    Returns:
        ``[R, k]`` (or ``[M, k]``) int64 row indices into ``x``, nearest first.
    """
    x = np.asarray(x)
    m = x.shape[0]
    if not 0 < k < m:
        raise ValueError(f"k={k} neighbours need 1 <= k < number of points, got {m} points")
    rows = np.arange(m) if rows is None else np.asarray(rows, dtype=np.int64)
    if knn_backend(m, exact_below, approximate=False) != SKLEARN:
        return exact_knn(x, k + 1).indices[rows, 1:]  # exact_knn puts the point itself first
    found = query_knn(x, x[rows], k + 1, exact_below=exact_below, approximate=False).indices
    return _drop_self(found, rows)


def _drop_self(found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[R, k+1]`` neighbour lists -> ``[R, k]`` without ``rows[i]`` (else without the last).

    With duplicate points the query itself need not come back first, or at all.
    """
    drop = found == rows[:, None]
    missing = ~drop.any(axis=1)
    drop[missing, -1] = True
    first = drop.cumsum(axis=1) == 1  # drop only one entry per row
    keep = ~(drop & first)
    return found[keep].reshape(found.shape[0], found.shape[1] - 1)


# ------------------------------------------------------------------ neighbour preserving


def neighbour_preserving(
    high: np.ndarray, low: np.ndarray, k: int = 15, exact_below: int = EXACT_BELOW
) -> np.ndarray:
    """Per point, how many of its k nearest neighbours are the same in high and low dimension.

    Args:
        high: ``[M, D]`` representations.
        low: ``[M, 2]`` their projections.
        k: neighbours per point (the point itself not counted).
        exact_below: see :func:`knn_indices`.

    Returns:
        ``[M]`` int64 intersection sizes, 0..k (k is ideal).
    """
    return neighbour_preserving_subset(high, low, None, k, exact_below)


def neighbour_preserving_subset(
    high: np.ndarray,
    low: np.ndarray,
    rows: np.ndarray | None,
    k: int = 15,
    exact_below: int = EXACT_BELOW,
) -> np.ndarray:
    """Neighbour preserving of the ``rows`` points, their neighbours searched among all points.

    This is the test-set variant of the original DVI tool: ``high``/``low`` hold train ∪ test
    points, ``rows`` are the test rows.

    Args:
        high: ``[M, D]`` representations of all points.
        low: ``[M, 2]`` their projections.
        rows: ``[R]`` indices of the scored points; None scores every point.
        k: neighbours per point (the point itself not counted).
        exact_below: see :func:`knn_indices`.

    Returns:
        ``[R]`` int64 intersection sizes, 0..k.
    """
    _check_pair(high, low)
    return neighbour_overlap(
        knn_indices(high, k, rows, exact_below), knn_indices(low, k, rows, exact_below)
    )


def boundary_preserving(
    high: np.ndarray,
    low: np.ndarray,
    boundary_high: np.ndarray,
    boundary_low: np.ndarray,
    k: int = 15,
    exact_below: int = EXACT_BELOW,
) -> np.ndarray:
    """Boundary preserving (docs/design.md §7): per sample, how many of its ``k`` nearest boundary
    points in high dimension are also among its ``k`` nearest boundary points in 2-D.

    Args:
        high: ``[M, D]`` sample representations.
        low: ``[M, 2]`` their projections.
        boundary_high: ``[B, D]`` boundary points, ``B >= k``.
        boundary_low: ``[B, 2]`` their projections.
        k: boundary neighbours per sample.
        exact_below: see :func:`ttvis.knn.knn_backend`.

    Returns:
        ``[M]`` int64 intersection sizes, 0..k.
    """
    _check_pair(high, low)
    _check_pair(boundary_high, boundary_low)
    return neighbour_overlap(
        query_knn(boundary_high, high, k, exact_below=exact_below, approximate=False).indices,
        query_knn(boundary_low, low, k, exact_below=exact_below, approximate=False).indices,
    )


def neighbour_preserving_test(
    high_train: np.ndarray,
    low_train: np.ndarray,
    high_test: np.ndarray,
    low_test: np.ndarray,
    k: int = 15,
    exact_below: int = EXACT_BELOW,
) -> np.ndarray:
    """Test-set neighbour preserving as the original DVI tool measures it.

    Each test point's k-NN are searched among train ∪ test points, in high and in low
    dimension; the intersection is scored for the test points only.

    Args:
        high_train: ``[M_train, D]`` training representations.
        low_train: ``[M_train, 2]`` their projections.
        high_test: ``[M_test, D]`` test representations.
        low_test: ``[M_test, 2]`` their projections.
        k: neighbours per point (the point itself not counted).
        exact_below: see :func:`knn_indices`.

    Returns:
        ``[M_test]`` int64 intersection sizes, 0..k.
    """
    high = np.concatenate([high_train, high_test])
    low = np.concatenate([low_train, low_test])
    rows = np.arange(high_train.shape[0], high.shape[0])
    return neighbour_preserving_subset(high, low, rows, k, exact_below)


def _check_pair(high: np.ndarray, low: np.ndarray) -> None:
    if high.shape[0] != low.shape[0]:
        raise ValueError(f"high has {high.shape[0]} rows but low has {low.shape[0]}")


# ------------------------------------------------------------------ prediction metrics


def prediction_preserving(logits_x: np.ndarray | torch.Tensor, logits_recon) -> float:
    """Share of samples whose predicted class on the reconstruction equals that on x.

    Args:
        logits_x: ``[M, C]`` subject outputs on the representations x.
        logits_recon: ``[M, C]`` subject outputs on the reconstructions ``g(f(x))``.

    Returns:
        A fraction in 0..1 (1 is ideal); NaN for M = 0.
    """
    a, b = _as_array(logits_x), _as_array(logits_recon)
    _check_logits(a, b)
    if a.shape[0] == 0:
        return math.nan
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def inverse_confidence_drop(logits_x: np.ndarray | torch.Tensor, logits_recon) -> float:
    """Mean absolute change of the predicted class's probability from x to its reconstruction.

    Args:
        logits_x: ``[M, C]`` subject outputs on x; the predicted class is their argmax.
        logits_recon: ``[M, C]`` subject outputs on ``g(f(x))``.

    Returns:
        Mean over samples of ``|softmax(logits_x)[c] - softmax(logits_recon)[c]|``, a
        probability difference in 0..1 (0 is ideal); NaN for M = 0.
    """
    a, b = _as_array(logits_x), _as_array(logits_recon)
    _check_logits(a, b)
    if a.shape[0] == 0:
        return math.nan
    pred = a.argmax(1)
    rows = np.arange(a.shape[0])
    return float(np.mean(np.abs(_softmax(a)[rows, pred] - _softmax(b)[rows, pred])))


def neighbour_vote_agreement(
    train_x: np.ndarray,
    train_pred: np.ndarray,
    query_x: np.ndarray,
    query_pred: np.ndarray,
    k: int = 15,
    exact_below: int = EXACT_BELOW,
) -> float:
    """Share of query samples predicted as most of their k nearest training samples are.

    A reference for test prediction preserving (``benchmarks/umap_reference.py``): a map that
    keeps neighbourhoods places an unseen sample among its high-dimensional training
    neighbours, so a test sample that the subject predicts unlike most of them is one such a
    map struggles to keep.

    Args:
        train_x: ``[N, D]`` training representations; train_pred: ``[N]`` their predicted
            classes (int).
        query_x: ``[M, D]`` query representations (e.g. the test samples); query_pred: ``[M]``.
        k: training neighbours per query (exact Euclidean; ``k <= N``).
        exact_below: see :func:`ttvis.knn.knn_backend`.

    Returns:
        A fraction in 0..1; NaN for M = 0. Ties between classes go to the smallest class id.
    """
    train_pred, query_pred = np.asarray(train_pred), np.asarray(query_pred)
    if train_pred.shape != (train_x.shape[0],) or query_pred.shape != (query_x.shape[0],):
        raise ValueError(
            f"expected one prediction per row, got {train_pred.shape} for {train_x.shape[0]} "
            f"training rows and {query_pred.shape} for {query_x.shape[0]} queries"
        )
    if query_x.shape[0] == 0:
        return math.nan
    neighbours = query_knn(
        np.asarray(train_x), np.asarray(query_x), k, exact_below=exact_below, approximate=False
    ).indices
    votes = train_pred[neighbours]  # [M, k]
    n_classes = int(max(train_pred.max(), query_pred.max())) + 1
    counts = np.zeros((votes.shape[0], n_classes), dtype=np.int64)
    np.add.at(counts, (np.arange(votes.shape[0])[:, None], votes), 1)
    return float(np.mean(counts.argmax(1) == query_pred))


def _as_array(logits) -> np.ndarray:
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    return np.asarray(logits, dtype=np.float64)


def _check_logits(a: np.ndarray, b: np.ndarray) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [M, C] logit arrays of one shape, got {a.shape}, {b.shape}")


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``[M, C]`` float64 logits."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ temporal preserving


def movement(prev_low: np.ndarray, curr_low: np.ndarray) -> np.ndarray:
    """``[M]`` Euclidean distance each point moved in 2-D between ``[M, 2]`` positions."""
    if prev_low.shape != curr_low.shape:
        raise ValueError(f"position shapes differ: {prev_low.shape} vs {curr_low.shape}")
    diff = np.asarray(curr_low, dtype=np.float64) - np.asarray(prev_low, dtype=np.float64)
    return np.linalg.norm(diff, axis=1)


def temporal_correlations(kept_shares: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Per point, Pearson correlation between its kept shares of k-NN and its movements.

    Args:
        kept_shares: ``[P, M]`` high-dimensional share of k-NN kept (:func:`kept_share`) by
            each of M points over P consecutive epoch pairs.
        moves: ``[P, M]`` 2-D movement over the same pairs.

    Returns:
        ``[M]`` float64 correlations in -1..1; NaN where either series is constant or P < 2.
    """
    kept_shares = np.asarray(kept_shares, dtype=np.float64)
    moves = np.asarray(moves, dtype=np.float64)
    if kept_shares.shape != moves.shape or kept_shares.ndim != 2:
        raise ValueError(
            f"expected two [P, M] arrays of one shape, got {kept_shares.shape}, {moves.shape}"
        )
    out = np.full(kept_shares.shape[1], np.nan)
    if kept_shares.shape[0] < 2:
        return out
    # Constant series (exactly, not up to rounding of their mean) have no correlation.
    ok = (np.ptp(kept_shares, axis=0) > 0) & (np.ptp(moves, axis=0) > 0)
    a = kept_shares[:, ok] - kept_shares[:, ok].mean(0)
    b = moves[:, ok] - moves[:, ok].mean(0)
    denom = np.sqrt((a * a).sum(0) * (b * b).sum(0))
    out[ok] = np.clip((a * b).sum(0) / denom, -1.0, 1.0)
    return out


def temporal_preserving(
    high_knn_per_epoch: Sequence[np.ndarray],
    low_positions_per_epoch: Sequence[np.ndarray],
    k: int | None = None,
) -> float:
    """Mean temporal-preserving correlation over points (docs/design.md §7), -1 ideal.

    Args:
        high_knn_per_epoch: one array per epoch (T of them, in epoch order): either ``[M, >=k]``
            int k-NN lists (point itself excluded, nearest first), or ``[M, D]`` float
            representations, whose k-NN are then computed with :func:`knn_indices`.
        low_positions_per_epoch: T arrays ``[M, 2]``, the projected positions.
        k: neighbours per point; None takes the width of the given k-NN lists. With wider
            lists only their first k columns are used.

    Returns:
        The mean of :func:`temporal_correlations` over points where it is defined (both series
        non-constant); NaN with fewer than 3 epochs or when no point qualifies.
    """
    if len(high_knn_per_epoch) != len(low_positions_per_epoch):
        raise ValueError(
            f"{len(high_knn_per_epoch)} k-NN arrays but {len(low_positions_per_epoch)} "
            "position arrays; expected one of each per epoch"
        )
    tracker = TemporalTracker()
    for high, low in zip(high_knn_per_epoch, low_positions_per_epoch, strict=True):
        high = np.asarray(high)
        if np.issubdtype(high.dtype, np.floating):
            if k is None:
                raise ValueError("k is needed to compute k-NN from representations")
            knn = knn_indices(high, k)
        else:
            knn = high if k is None else high[:, :k]
        tracker.add(knn, low)
    return tracker.value()


class TemporalTracker:
    """Accumulates temporal preserving epoch by epoch, keeping only ``O(T * M)`` floats.

    Holds the previous epoch's k-NN lists and positions, and per epoch pair the ``[M]`` kept share
    and movement as float32 (8 bytes per point and pair), so a long run never keeps more than
    one epoch's k-NN.
    """

    def __init__(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._kept_shares: list[np.ndarray] = []
        self._moves: list[np.ndarray] = []

    def add(self, knn: np.ndarray, low: np.ndarray) -> None:
        """Append the next epoch: ``knn [M, k]`` int neighbour lists, ``low [M, 2]`` positions."""
        knn, low = np.asarray(knn), np.asarray(low)
        if knn.shape[0] != low.shape[0]:
            raise ValueError(f"{knn.shape[0]} k-NN rows but {low.shape[0]} positions")
        if self._prev is not None:
            prev_knn, prev_low = self._prev
            self._kept_shares.append(kept_share(prev_knn, knn).astype(np.float32))
            self._moves.append(movement(prev_low, low).astype(np.float32))
        self._prev = (knn, low)

    def value(self) -> float:
        """Mean per-point correlation (NaN below 3 epochs or when none is defined)."""
        if len(self._kept_shares) < 2:
            return math.nan
        corr = temporal_correlations(np.stack(self._kept_shares), np.stack(self._moves))
        defined = corr[np.isfinite(corr)]
        return float(defined.mean()) if defined.size else math.nan
