"""Reporting evaluation results: plain-text tables and TensorBoard scalars.

The results are :func:`ttvis.evaluation.evaluate_visualization`'s dicts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ttvis.metrics import PER_EPOCH_KEYS

__all__ = ["format_comparison", "format_row", "format_table", "write_tensorboard_scalars"]


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


def format_row(row: dict[str, float | None]) -> str:
    """``key value, ...`` of one epoch's results."""
    return ", ".join(f"{key} {_cell(value)}" for key, value in row.items())


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
