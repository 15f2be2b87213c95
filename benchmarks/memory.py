"""Peak resident memory of ``train.py`` on a large synthetic run, for 2 epochs and for all.

python benchmarks/memory.py                       # 20 epochs of 20000 x 256, in a temp folder
python benchmarks/memory.py --epochs 20 --samples 20000 --dim 256 --keep /data/synthetic

The run is written epoch by epoch (``synthetic.write_run``: 10 classes drifting apart, the
predictions of a fixed linear head, so the subject head is recovered by least squares and
backgrounds are drawn). ``train.py`` then runs in a subprocess with short training settings,
once on the first 2 epochs and once on every epoch; the peak resident set size of each
(``getrusage``, the child's maximum) is printed next to the size of one epoch's arrays. When
nothing accumulates across epochs the two peaks are close.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthetic import N_CLASSES, write_run

REPO_ROOT = Path(__file__).resolve().parents[1]
# Short training: the point is memory across epochs, not the quality of the visualizers.
FAST = [
    "trainer.max_epochs=1",
    "method.warm_max_epochs=1",
    "method.s_n_epochs=1",
    "logger=none",
    "callbacks.progress_bar=null",
    "trainer.enable_progress_bar=false",
]


def peak_rss_mib(args: list[str]) -> tuple[float, float]:
    """Run ``python train.py ARGS``; return ``(peak RSS in MiB, wall seconds)``.

    Each measurement runs in a fresh helper process so ``RUSAGE_CHILDREN`` sees only it.
    """
    code = (
        "import resource, subprocess, sys;"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "train.py", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    kib = int(out.stdout.strip().splitlines()[-1])  # Linux reports ru_maxrss in KiB
    return kib / 1024, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = opts.keep or Path(tmp) / "run"
        if not (root / "dataset").exists():
            write_run(root, opts.epochs, opts.samples, opts.dim)
        epoch_mib = opts.samples * (opts.dim + N_CLASSES) * 4 / 2**20
        print(
            f"run: {opts.epochs} epochs of {opts.samples} x {opts.dim} float32; one epoch's "
            f"representations + predictions: {epoch_mib:.1f} MiB; whole run "
            f"{opts.epochs * epoch_mib:.0f} MiB",
            flush=True,
        )
        common = [f"content_path={root}", f"hydra.run.dir={Path(tmp) / 'hydra'}", *FAST]
        results = {}
        for label, epochs in (("2 epochs", "[1,2]"), (f"{opts.epochs} epochs", "null")):
            args = [*common, f"epochs={epochs}", f"output_dir={Path(tmp) / 'out' / label[:2]}"]
            rss, seconds = peak_rss_mib(args)
            results[label] = rss
            print(f"{label:>10}: peak RSS {rss:7.0f} MiB  ({seconds:.0f} s)", flush=True)
        small, large = results.values()
        print(
            f"growth from 2 to {opts.epochs} epochs: {large - small:+.0f} MiB "
            f"({(large - small) / epoch_mib:+.2f} x one epoch's arrays)"
        )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
