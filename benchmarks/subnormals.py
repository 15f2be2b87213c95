"""How much subnormal (denormal) floats slow the CPU's matrix products, and that ttvis's
setting (:func:`ttvis.floats.flush_subnormals`) removes the slowdown.

    python benchmarks/subnormals.py [--rows 4000] [--width 512] [--repeats 5]

Times ``[rows, width] @ [width, 128]`` with normal operands, with operands scaled into the
subnormal range (x 1e-40), and the latter after ``flush_subnormals()``. Each case runs in a
fresh process, because OpenMP's worker threads copy the setting when they start; torch uses the
threads ``OMP_NUM_THREADS`` gives. Prints the median milliseconds of ``--repeats`` products and
each case's ratio to the normal one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

CASES = {
    "normal operands": (1.0, False),
    "subnormal operands": (1e-40, False),
    "subnormal operands, flushed": (1e-40, True),
}


def time_product(rows: int, width: int, factor: float, flush: bool, repeats: int) -> float:
    """Median milliseconds of one ``[rows, width] @ [width, 128]`` product, operands x factor."""
    import torch

    if flush:
        from ttvis.floats import flush_subnormals

        flush_subnormals()
    a, b = torch.randn(rows, width) * factor, torch.randn(width, 128)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        factor, flush = CASES[args.case]
        print(json.dumps(time_product(args.rows, args.width, factor, flush, args.repeats)))
        return
    base = None
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--rows", str(args.rows)]
        cmd += ["--width", str(args.width), "--repeats", str(args.repeats)]
        ms = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        base = base or ms
        print(f"{case:30s} {ms:9.2f} ms   {ms / base:7.1f}x")


if __name__ == "__main__":
    main()
