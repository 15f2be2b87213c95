"""k-NN at scale: NN-descent from scratch against NN-descent from the previous epoch's graph,
both against the exact neighbours; and the parts of one subject epoch's complex.

    python benchmarks/knn_scale.py                          # 20,000 x 512, then 48,000 x 512
    python benchmarks/knn_scale.py --n 20000 --dim 512 --parts-n 0   # no complex parts
    python benchmarks/knn_scale.py --device cuda            # the exact k-NN on the GPU too
    python benchmarks/knn_scale.py --compile-tax             # cold vs warm numba cache only

Data: the last two epochs ``T-1, T`` of a ``T``-epoch run of ``synthetic.epoch_features`` (10
drifting classes; ``--of-epochs T``, default 10). As in DVI, epoch T-1's graph is NN-descent's
from scratch and epoch T's starts from it. Recall is the share of the exact k nearest
neighbours found (self included), averaged over points. numba's compilation is paid in a
warm-up on a small set first; what a timed call still compiles is shown as "compiling".
Prints seconds, recall and the speed-up.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from numba.core import event
from synthetic import epoch_features, head_of

from ttvis.boundary import flip_segments
from ttvis.complex import edges_from_graph, fuzzy_complex, neighbour_overlap
from ttvis.knn import exact_knn, nearest_neighbours
from ttvis.subject import LinearHead

K = 15  # method.n_neighbors
S_N_EPOCHS = 5  # method.s_n_epochs
STEPS = 12  # method.boundary.steps


class CompileSeconds(event.Listener):
    """Seconds numba spends compiling (outermost compilations only)."""

    def __init__(self) -> None:
        self.depth, self.start, self.total = 0, 0.0, 0.0

    def on_start(self, ev) -> None:
        if self.depth == 0:
            self.start = time.perf_counter()
        self.depth += 1

    def on_end(self, ev) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.total += time.perf_counter() - self.start


COMPILING = CompileSeconds()


def timed(fn, *args, **kwargs):
    """``(fn(*args, **kwargs), seconds)``; prints numba's compile time within, if any."""
    compiled = COMPILING.total
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    if COMPILING.total - compiled > 0.05:
        print(f"    ({fn.__name__}: {COMPILING.total - compiled:.1f}s of {seconds:.1f}s compiling)")
    return out, seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth [N, k]`` that ``found [N, k]`` holds."""
    return float(neighbour_overlap(found, truth).mean() / truth.shape[1])


def last_two(n: int, dim: int, of_epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """Epochs ``of_epochs - 1`` and ``of_epochs`` of a synthetic run, ``[n, dim]`` each."""
    *_, before, after = epoch_features(n, dim, of_epochs)
    return before, after


def warm_up() -> None:
    """Compile (or load from numba's cache) everything the timed calls use."""
    before, after = last_two(2000, 16, 2)
    prev = nearest_neighbours(before, K, exact_below=0, device="cpu")
    nearest_neighbours(after, K, exact_below=0, device="cpu", init=prev)
    fuzzy_complex(prev, S_N_EPOCHS)


def warm_start(n: int, dim: int, of_epochs: int, device: str) -> None:
    """NN-descent of epoch T from scratch and from epoch T-1's graph, recall against exact."""
    before, after = last_two(n, dim, of_epochs)
    truth, t_exact = timed(exact_knn, after, K, device="cpu")
    print(f"{n} x {dim}: exact k-NN (numpy, float64) {t_exact:.1f}s", flush=True)
    if device != "cpu":
        exact_knn(after[:1000], K, device=device)  # CUDA context and kernels
        gpu, t_gpu = timed(exact_knn, after, K, device=device)
        agree = recall(gpu.indices, truth.indices)
        print(f"  exact k-NN on {device}: {t_gpu:.2f}s, agreement {agree:.4f}", flush=True)
    prev, t_prev = timed(nearest_neighbours, before, K, exact_below=0, device="cpu")
    scratch, t_scratch = timed(nearest_neighbours, after, K, exact_below=0, device="cpu")
    warm, t_warm = timed(nearest_neighbours, after, K, exact_below=0, device="cpu", init=prev)
    kept = recall(prev.indices, truth.indices)
    print(
        f"  epoch T-1 NN-descent (scratch): {t_prev:.1f}s; its graph holds {kept:.3f} of "
        "epoch T's exact neighbours"
    )
    print(
        f"  epoch T NN-descent from scratch:         {t_scratch:6.1f}s, "
        f"recall {recall(scratch.indices, truth.indices):.4f}"
    )
    print(
        f"  epoch T NN-descent from epoch T-1's graph: {t_warm:6.1f}s, "
        f"recall {recall(warm.indices, truth.indices):.4f}  "
        f"(saves {t_scratch - t_warm:.1f}s, {100 * (1 - t_warm / t_scratch):.0f}%)",
        flush=True,
    )


def complex_parts(n: int, dim: int, of_epochs: int) -> None:
    """Seconds of the parts of DVI's complex for epoch T of ``n x dim`` training points."""
    before, after = last_two(n, dim, of_epochs)
    _, weight, bias = head_of(dim)
    head = LinearHead(torch.from_numpy(weight), torch.from_numpy(bias), 0.0)
    prev, t_first = timed(nearest_neighbours, before, K, exact_below=0, device="cpu")
    knn, t_knn = timed(nearest_neighbours, after, K, exact_below=0, device="cpu", init=prev)
    (graph, sigmas, rhos), t_fuzzy = timed(fuzzy_complex, knn, S_N_EPOCHS)
    edges, t_edges = timed(edges_from_graph, graph, sigmas, rhos)
    segments, t_seg = timed(flip_segments, after, knn, head, STEPS)
    total = t_knn + t_fuzzy + t_edges + t_seg
    print(
        f"{n} x {dim} complex parts (epoch T; epoch T-1's k-NN from scratch took {t_first:.1f}s):"
    )
    print(f"  k-NN (NN-descent from epoch T-1's graph) {t_knn:6.1f}s")
    print(f"  fuzzy simplicial set                   {t_fuzzy:6.1f}s  ({len(edges):,} edges)")
    print(f"  flat edge arrays                       {t_edges:6.1f}s")
    print(f"  boundary segments                      {t_seg:6.1f}s  ({len(segments):,} segments)")
    print(f"  total                                  {total:6.1f}s", flush=True)


_FIRST_COMPLEX = """
import time
start = time.perf_counter()
import numpy as np
from synthetic import epoch_features
from ttvis.complex import spatial_complex
(x,) = epoch_features({n}, {dim}, 1)
imported = time.perf_counter()
spatial_complex(x, 15, 5, exact_below=0)
print(f"imports {{imported - start:.1f}}s, first complex {{time.perf_counter() - imported:.1f}}s")
"""


def compile_tax(n: int, dim: int) -> None:
    """The first complex of a process (NN-descent) on a cold numba cache, then on a warm one."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, NUMBA_CACHE_DIR=tmp, CUDA_VISIBLE_DEVICES="")
        code = _FIRST_COMPLEX.format(n=n, dim=dim)
        for label in ("cold cache", "warm cache"):
            out = subprocess.run(
                [sys.executable, "-c", code],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=Path(__file__).parent,
            )
            print(f"{n} x {dim}, {label}: {out.stdout.strip()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="points of the recall test")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--parts-n", type=int, default=48_000, help="0: skip the complex parts")
    parser.add_argument("--of-epochs", type=int, default=10, help="T: the run's length")
    parser.add_argument("--device", default="cpu", help="also time the exact k-NN here")
    parser.add_argument("--compile-tax", action="store_true", help="only cold vs warm cache")
    opts = parser.parse_args()
    if opts.compile_tax:
        compile_tax(12_000, 64)
        return
    event.register("numba:compile", COMPILING)
    _, t_warm_up = timed(warm_up)
    print(f"warm-up (numba compile or cache load): {t_warm_up:.1f}s", flush=True)
    warm_start(opts.n, opts.dim, opts.of_epochs, opts.device)
    if opts.parts_n:
        complex_parts(opts.parts_n, opts.dim, opts.of_epochs)


if __name__ == "__main__":
    main()
