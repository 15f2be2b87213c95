"""Quality metrics of a trained visualizer (docs/design.md §7).

Pure functions on arrays, then :func:`evaluate_visualization`, which runs them over every
exported epoch of a run folder:

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
                           epoch pairs between the high-dimensional
                           neighbour-preserving rate and the 2-D movement
=========================  ==================================================  =====

k-NN lists never contain the point itself and are exact (brute force below
``exact_below`` points, scikit-learn's exact search above), so every number is deterministic.
Test-set variants follow the original DVI tool: a test sample's neighbours are searched among
train ∪ test points, and only the test rows are scored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ttvis.boundary import boundary_points
from ttvis.complex import (
    KNNGraph,
    exact_knn,
    neighbour_overlap,
    neighbour_preserving_rate,
    query_knn,
)
from ttvis.export import atomic_write_text, epochs_with_projection
from ttvis.modules.autoencoder import Autoencoder
from ttvis.run import TrainingRun
from ttvis.subject import try_load_subject_head

log = logging.getLogger(__name__)

EXPORT_ROOT = Path("visualize")
METRICS_FILE = "metrics.json"
EXACT_BELOW = 20000  # up to this many points, brute-force k-NN (complex.exact_knn)
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


class EvaluationError(RuntimeError):
    """A visualizer cannot be evaluated: exports missing, unreadable or inconsistent."""


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
        exact_below: below this M, :func:`ttvis.complex.exact_knn` (dense blocks); from it on,
            scikit-learn's exact ``NearestNeighbors`` (no ``M x M`` matrix).

    Returns:
        ``[R, k]`` (or ``[M, k]``) int64 row indices into ``x``, nearest first.
    """
    x = np.asarray(x)
    m = x.shape[0]
    if not 0 < k < m:
        raise ValueError(f"k={k} neighbours need 1 <= k < number of points, got {m} points")
    rows = np.arange(m) if rows is None else np.asarray(rows, dtype=np.int64)
    if m < exact_below:
        return exact_knn(x, k + 1).indices[rows, 1:]  # exact_knn puts the point itself first
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k + 1).fit(np.asarray(x, dtype=np.float32))
    found = index.kneighbors(np.asarray(x[rows], dtype=np.float32), return_distance=False)
    return _drop_self(found.astype(np.int64), rows)


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
        exact_below: see :func:`ttvis.complex.query_knn`.

    Returns:
        ``[M]`` int64 intersection sizes, 0..k.
    """
    _check_pair(high, low)
    _check_pair(boundary_high, boundary_low)
    return neighbour_overlap(
        query_knn(boundary_high, high, k, exact_below=exact_below).indices,
        query_knn(boundary_low, low, k, exact_below=exact_below).indices,
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


def temporal_correlations(rates: np.ndarray, moves: np.ndarray) -> np.ndarray:
    """Per point, Pearson correlation between its neighbour-preserving rates and movements.

    Args:
        rates: ``[P, M]`` high-dimensional neighbour-preserving rate of each of M points over
            P consecutive epoch pairs.
        moves: ``[P, M]`` 2-D movement over the same pairs.

    Returns:
        ``[M]`` float64 correlations in -1..1; NaN where either series is constant or P < 2.
    """
    rates = np.asarray(rates, dtype=np.float64)
    moves = np.asarray(moves, dtype=np.float64)
    if rates.shape != moves.shape or rates.ndim != 2:
        raise ValueError(
            f"expected two [P, M] arrays of one shape, got {rates.shape}, {moves.shape}"
        )
    out = np.full(rates.shape[1], np.nan)
    if rates.shape[0] < 2:
        return out
    # Constant series (exactly, not up to rounding of their mean) have no correlation.
    ok = (np.ptp(rates, axis=0) > 0) & (np.ptp(moves, axis=0) > 0)
    a = rates[:, ok] - rates[:, ok].mean(0)
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

    Holds the previous epoch's k-NN lists and positions, and per epoch pair the ``[M]`` rate
    and movement as float32 (8 bytes per point and pair), so a long run never keeps more than
    one epoch's k-NN.
    """

    def __init__(self) -> None:
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._rates: list[np.ndarray] = []
        self._moves: list[np.ndarray] = []

    def add(self, knn: np.ndarray, low: np.ndarray) -> None:
        """Append the next epoch: ``knn [M, k]`` int neighbour lists, ``low [M, 2]`` positions."""
        knn, low = np.asarray(knn), np.asarray(low)
        if knn.shape[0] != low.shape[0]:
            raise ValueError(f"{knn.shape[0]} k-NN rows but {low.shape[0]} positions")
        if self._prev is not None:
            prev_knn, prev_low = self._prev
            self._rates.append(neighbour_preserving_rate(prev_knn, knn).astype(np.float32))
            self._moves.append(movement(prev_low, low).astype(np.float32))
        self._prev = (knn, low)

    def value(self) -> float:
        """Mean per-point correlation (NaN below 3 epochs or when none is defined)."""
        if len(self._rates) < 2:
            return math.nan
        corr = temporal_correlations(np.stack(self._rates), np.stack(self._moves))
        defined = corr[np.isfinite(corr)]
        return float(defined.mean()) if defined.size else math.nan


# ------------------------------------------------------------------ a run's exports


def export_dir(run: TrainingRun, vis_name: str) -> Path:
    """``content_path/visualize/{vis_name}``."""
    return run.content_path / EXPORT_ROOT / vis_name


def exported_epochs(run: TrainingRun, vis_name: str) -> list[int]:
    """Epochs of ``run`` that have ``projection/{epoch}.npy`` under the export folder."""
    return epochs_with_projection(export_dir(run, vis_name), run.epochs)


def require_exports(run: TrainingRun, vis_name: str) -> list[int]:
    """:func:`exported_epochs`, raising :class:`EvaluationError` when there is none."""
    epochs = exported_epochs(run, vis_name)
    if not epochs:
        raise EvaluationError(
            f"no exports under {export_dir(run, vis_name) / 'projection'} for epochs "
            f"{_epoch_list(run.epochs)}; run train.py first"
        )
    return epochs


def _epoch_list(epochs: list[int], shown: int = 5) -> str:
    if len(epochs) <= shown:
        return ", ".join(map(str, epochs))
    return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} epochs)"


def visualizer_path(run: TrainingRun, vis_name: str, epoch: int) -> Path:
    """The visualizer of ``epoch``: ``vismodel/{epoch}.pth`` (DVI), else the one shared model.

    A folder holding only ``vismodel/1.pth`` is a TimeVis export (one model for all epochs).

    Raises:
        EvaluationError: when neither exists.
    """
    model_dir = export_dir(run, vis_name) / "vismodel"
    own = model_dir / f"{epoch}.pth"
    if own.is_file():
        return own
    found = sorted(model_dir.glob("*.pth")) if model_dir.is_dir() else []
    if [p.name for p in found] == ["1.pth"]:
        return found[0]
    raise EvaluationError(
        f"{own}: file not found (and {model_dir} does not hold a single shared 1.pth); "
        "run train.py first"
    )


def load_visualizer(path: Path, device: torch.device | str = "cpu") -> Autoencoder:
    """An :class:`Autoencoder` from a ``{"state_dict", "encoder_dims", "decoder_dims"}`` file."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        model = Autoencoder(list(state["encoder_dims"]), list(state["decoder_dims"]))
        model.load_state_dict(state["state_dict"])
    except Exception as err:
        raise EvaluationError(f"{path}: not a loadable visualizer export ({err})") from err
    return model.to(device).eval()


def load_projection(run: TrainingRun, vis_name: str, epoch: int) -> np.ndarray:
    """``projection/{epoch}.npy`` as float64 ``[N*F, 2]``, checked against the run."""
    path = export_dir(run, vis_name) / "projection" / f"{epoch}.npy"
    try:
        proj = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise EvaluationError(f"{path}: not a readable .npy array ({err})") from None
    expected = (run.shape.n_points, 2)
    if proj.shape != expected:
        raise EvaluationError(f"{path}: shape {proj.shape}; expected {list(expected)}")
    if not np.isfinite(proj).all():
        raise EvaluationError(f"{path}: contains NaN or inf")
    return proj.astype(np.float64)


def _in_batches(fn, x: np.ndarray, batch_size: int, device: torch.device | str) -> torch.Tensor:
    """``fn`` applied to ``x [M, D]`` (possibly memory-mapped) in float32 batches on
    ``device``, without gradients -> the concatenated ``[M, ...]`` output on ``device``."""
    out = []
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.from_numpy(np.array(x[start : start + batch_size], dtype=np.float32))
            out.append(fn(chunk.to(device)))
    return torch.cat(out)


def encode(
    model: Autoencoder, x: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """``f(x)`` for ``x [M, D]``, ``M >= 1``, in batches -> ``[M, 2]`` float64 array."""
    return _in_batches(model.encoder, x, batch_size, device).cpu().numpy().astype(np.float64)


def reconstruct(
    model: Autoencoder, x: np.ndarray, batch_size: int, device: torch.device | str
) -> torch.Tensor:
    """``g(f(x))`` for ``x [M, D]`` in batches -> ``[M, D]`` float32 tensor on ``device``."""
    if x.shape[0] == 0:
        return torch.zeros(0, x.shape[1], device=device)
    return _in_batches(lambda c: model(c)[1], x, batch_size, device)


# ------------------------------------------------------------------ evaluation


def evaluate_visualization(
    run: TrainingRun,
    vis_name: str,
    k: int = 15,
    device: torch.device | str = "cpu",
    batch_size: int = 65536,
    max_linear_residual: float = 1e-3,
    exact_below: int = EXACT_BELOW,
    boundary_fraction: float = 0.1,
    boundary_delta: float = 0.1,
    boundary_steps: int = 12,
    seed: int = 0,
) -> dict[str, Any]:
    """Every §7 metric for the exported epochs of one visualizer.

    Per epoch only that epoch's representations are read (memory-mapped, one epoch at a
    time); across epochs only k-NN lists, positions and per-pair rates are kept.

    Args:
        run: the validated run.
        vis_name: export folder name under ``content_path/visualize/`` (``DVI``, ``TimeVis``).
        k: neighbours per point for neighbour and temporal preserving.
        device: where the visualizer and the subject head evaluate.
        batch_size: points per visualizer/head call.
        max_linear_residual: accepted residual of a least-squares linear subject head.
        exact_below: see :func:`knn_indices`.
        boundary_fraction, boundary_delta, boundary_steps: the boundary points of boundary
            preserving: this share of the training points' differently-predicted neighbour
            pairs, bisected ``boundary_steps`` times, gap below ``boundary_delta``
            (:func:`ttvis.boundary.boundary_points`).
        seed: chooses the pairs, so repeated evaluations agree.

    Returns:
        A JSON-serialisable dict::

            {"vis", "k", "content_path", "n_train", "n_test",
             "epochs": {"1": {"nn_train", "nn_test", "bp_train", "bp_test", "ppr_train",
                              "ppr_test", "icd_train", "icd_test"}, ...},
             "temporal_train", "temporal_test"}

        ``nn_*`` and ``bp_*`` are mean intersection sizes (0..k), ``ppr_*`` fractions,
        ``icd_*`` probability differences. Values that do not apply (no test samples, no
        subject head, fewer than k boundary points, fewer than 3 epochs for temporal
        preserving) are None.

    Raises:
        EvaluationError: no exported epoch, or a broken/missing export file.
    """
    epochs = require_exports(run, vis_name)
    train_pts, test_pts = run.train_points, run.test_points
    n_train, n_test = train_pts.size, test_pts.size
    if k < 1 or n_train <= k:
        raise EvaluationError(f"k={k}: expected 1 <= k < number of training points ({n_train})")
    union = np.concatenate([train_pts, test_pts])
    test_rows = np.arange(n_train, n_train + n_test)
    temporal_train, temporal_test = TemporalTracker(), TemporalTracker()
    per_epoch: dict[str, dict[str, float | None]] = {}
    for epoch in epochs:
        model = load_visualizer(visualizer_path(run, vis_name, epoch), device)
        high = np.asarray(run.representations(epoch)[union], dtype=np.float32)
        low = load_projection(run, vis_name, epoch)[union]
        row: dict[str, float | None] = dict.fromkeys(PER_EPOCH_KEYS)

        knn_high = knn_high_train = knn_indices(high[:n_train], k, exact_below=exact_below)
        knn_low = knn_indices(low[:n_train], k, exact_below=exact_below)
        row["nn_train"] = float(neighbour_overlap(knn_high, knn_low).mean())
        temporal_train.add(knn_high, low[:n_train])
        if n_test:
            knn_high = knn_indices(high, k, test_rows, exact_below)
            knn_low = knn_indices(low, k, test_rows, exact_below)
            row["nn_test"] = float(neighbour_overlap(knn_high, knn_low).mean())
            temporal_test.add(knn_high, low[n_train:])

        head = try_load_subject_head(run, epoch, device, max_linear_residual=max_linear_residual)
        if head is not None:
            boundary = boundary_points(
                high[:n_train],
                KNNGraph(knn_high_train, np.zeros(knn_high_train.shape, np.float32)),
                head,
                max(1, int(round(boundary_fraction * n_train))),
                delta=boundary_delta,
                n_steps=boundary_steps,
                seed=seed,
            )
            boundary_low = (
                encode(model, boundary, batch_size, device) if boundary.shape[0] >= k else None
            )
            for part, rows in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
                x = high[rows]
                if x.shape[0] == 0:
                    continue
                if boundary_low is not None:
                    row[f"bp_{part}"] = float(
                        boundary_preserving(
                            x, low[rows], boundary, boundary_low, k, exact_below
                        ).mean()
                    )
                recon = reconstruct(model, x, batch_size, device)
                logits_x = head.predict(torch.from_numpy(x), batch_size)
                logits_recon = head.predict(recon, batch_size)
                row[f"ppr_{part}"] = prediction_preserving(logits_x, logits_recon)
                row[f"icd_{part}"] = inverse_confidence_drop(logits_x, logits_recon)
        per_epoch[str(epoch)] = row
        log.info("%s epoch %d: %s", vis_name, epoch, _format_row(row))

    return {
        "vis": vis_name,
        "k": int(k),
        "content_path": str(run.content_path),
        "n_train": int(n_train),
        "n_test": int(n_test),
        "epochs": per_epoch,
        "temporal_train": _finite_or_none(temporal_train.value()),
        "temporal_test": _finite_or_none(temporal_test.value()) if n_test else None,
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _format_row(row: dict[str, float | None]) -> str:
    return ", ".join(f"{key} {_cell(value)}" for key, value in row.items())


def write_metrics(run: TrainingRun, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``content_path/visualize/{vis}/metrics.json`` atomically."""
    path = export_dir(run, results["vis"]) / METRICS_FILE
    return atomic_write_text(path, json.dumps(results, indent=2, allow_nan=False) + "\n")


def write_tensorboard_scalars(results: dict[str, Any], log_dir: str | Path) -> Path:
    """Log :func:`evaluate_visualization`'s results as TensorBoard scalars under ``log_dir``.

    Per-epoch metrics go to tags ``{vis}/eval/{metric}`` (``nn_train``, ``ppr_test``, ...) at
    step = subject epoch; the run-level ``temporal_train``/``temporal_test`` at the last
    epoch's step. Metrics that do not apply (None) are left out.

    Returns:
        ``log_dir``, holding one new event file.
    """
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(log_dir)
    prefix = f"{results['vis']}/eval"
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        epochs = sorted(results["epochs"], key=int)
        for epoch in epochs:
            for key, value in results["epochs"][epoch].items():
                if value is not None:
                    writer.add_scalar(f"{prefix}/{key}", value, global_step=int(epoch))
        for key in ("temporal_train", "temporal_test"):
            if results.get(key) is not None and epochs:
                writer.add_scalar(f"{prefix}/{key}", results[key], global_step=int(epochs[-1]))
    finally:
        writer.close()
    return log_dir


def parse_vis_names(value: str | Sequence[str]) -> list[str]:
    """``"DVI"``, ``"DVI,TimeVis"`` or ``["DVI", "TimeVis"]`` -> ``["DVI", "TimeVis"]``."""
    items = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    names = [name.strip() for name in items if name.strip()]
    if not names:
        raise ValueError(f"vis={value!r}: expected one or more export folder names")
    return names


# ------------------------------------------------------------------ report


def _cell(value: float | None, width: int = 0) -> str:
    text = "-" if value is None or not math.isfinite(value) else f"{value:.3f}"
    return text.rjust(width)


def format_table(results: dict[str, Any]) -> str:
    """A plain-text report of :func:`evaluate_visualization`'s results.

    One row per epoch, one column per metric (``-`` where it does not apply), then min, mean
    and max over epochs, then the run-level temporal preserving.
    """
    epochs = results["epochs"]
    columns = [
        key for key in PER_EPOCH_KEYS if any(r.get(key) is not None for r in epochs.values())
    ]
    width = max(9, *(len(c) + 1 for c in columns)) if columns else 9
    lines = [
        f"{results['vis']}: k = {results['k']}, {results['n_train']} train / "
        f"{results['n_test']} test points; nn_* of k (ideal k), ppr_* ideal 1, icd_* ideal 0",
        "epoch".ljust(8) + "".join(c.rjust(width) for c in columns),
    ]
    lines += [
        str(epoch).ljust(8) + "".join(_cell(row.get(c), width) for c in columns)
        for epoch, row in epochs.items()
    ]
    lines.append("-" * (8 + width * len(columns)))
    for name, reduce in (("min", min), ("mean", lambda v: sum(v) / len(v)), ("max", max)):
        cells = []
        for c in columns:
            values = [r[c] for r in epochs.values() if r.get(c) is not None]
            cells.append(_cell(reduce(values) if values else None, width))
        lines.append(name.ljust(8) + "".join(cells))
    lines.append(
        f"temporal preserving (ideal -1): train {_cell(results.get('temporal_train'))}, "
        f"test {_cell(results.get('temporal_test'))}"
    )
    return "\n".join(lines)


def format_comparison(results: Sequence[dict[str, Any]]) -> str:
    """Several visualizers side by side: one row per epoch and metric, a column per method.

    Rows are ``epoch  metric`` for every epoch any method exported and every per-epoch metric
    any of them measured (``-`` where a method has no value), then the mean over epochs of
    each metric (``mean``) and the run-level temporal preserving (``all``).

    Args:
        results: :func:`evaluate_visualization` outputs, one per visualizer, same run and k.
    """
    names = [r["vis"] for r in results]
    epochs: list[str] = []
    for r in results:
        epochs += [e for e in r["epochs"] if e not in epochs]
    epochs.sort(key=int)
    metrics = [
        key
        for key in PER_EPOCH_KEYS
        if any(row.get(key) is not None for r in results for row in r["epochs"].values())
    ]
    width = max(10, *(len(n) + 2 for n in names))
    first = results[0]
    lines = [
        f"{' vs '.join(names)}: k = {first['k']}, {first['n_train']} train / "
        f"{first['n_test']} test points; nn_* of k (ideal k), ppr_* ideal 1, icd_* ideal 0, "
        "temporal_* ideal -1",
        "epoch".ljust(7) + "metric".ljust(16) + "".join(n.rjust(width) for n in names),
    ]
    for epoch in epochs:
        for key in metrics:
            cells = [_cell(r["epochs"].get(epoch, {}).get(key), width) for r in results]
            lines.append(epoch.ljust(7) + key.ljust(16) + "".join(cells))
    lines.append("-" * (23 + width * len(names)))
    for key in metrics:
        cells = []
        for r in results:
            values = [row[key] for row in r["epochs"].values() if row.get(key) is not None]
            cells.append(_cell(sum(values) / len(values) if values else None, width))
        lines.append("mean".ljust(7) + key.ljust(16) + "".join(cells))
    for key in ("temporal_train", "temporal_test"):
        cells = [_cell(r.get(key), width) for r in results]
        lines.append("all".ljust(7) + key.ljust(16) + "".join(cells))
    return "\n".join(lines)
