"""Subnormal floats off in this process's CPU arithmetic (the one place that sets it)."""

from __future__ import annotations


def flush_subnormals() -> None:
    """Flush subnormal (denormal) floats to zero in CPU arithmetic; idempotent.

    A matrix product with subnormal operands runs up to 200x slower on x86 (microcode
    assists: `python benchmarks/subnormals.py`), and a long visualizer fit drives some of its
    gradients there: a 10,000 x 512 run's first fit slowed from 31k to under 5k edges per second
    (docs/results.md). Values below 1.2e-38 become 0, far below anything a loss resolves. The
    setting is per thread and OpenMP's worker threads copy it when they start, so it is made
    before torch's first parallel operation (:func:`ttvis.preflight.open_run`) and again when a
    fit starts, for processes a spawn launcher started.
    """
    import torch

    torch.set_flush_denormal(True)
