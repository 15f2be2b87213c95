"""What a data-parallel step can gain on this machine: the ceiling for DDP, from the network alone.

    python benchmarks/ddp_step.py [--rows 2400] [--steps 200] [--dim 64]

Times one optimizer step (forward, backward, Adam) of ttvis's autoencoder with the default
model's widths (``conf/model/default.yaml``), on a fixed batch with a plain reconstruction loss
(no complex, no edge stream, no Lightning):

- one process with all the machine's threads on ``--rows`` rows;
- one process with one thread on ``--rows`` and on ``--rows / 2`` rows;
- two one-thread processes on ``--rows / 2`` rows each: independent (no synchronisation), with a
  hand-written gradient all-reduce (gloo), and wrapped in torch's DistributedDataParallel.

Prints the median milliseconds per step of each (the first 10 steps left out) and the best
two-process speed-up over one process: how much of 1/N a DDP fit could reach here at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel

import ttvis  # noqa: F401  (registers the config's resolvers)
from ttvis.modules import Autoencoder

MODEL_CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "default.yaml"
WARMUP_STEPS = 10


def autoencoder(dim: int) -> Autoencoder:
    """The default model config's visualizer for ``dim``-d inputs (its dims resolved by ttvis)."""
    model = OmegaConf.load(MODEL_CONF)
    model.input_dim = dim
    return Autoencoder(list(model.encoder_dims), list(model.decoder_dims))


def median_step_ms(model, rows: int, dim: int, steps: int, all_reduce=None) -> float:
    """Median milliseconds of one step on ``[rows, dim]`` random inputs."""
    x = torch.randn(rows, dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = ((model(x)[1] - x) ** 2).mean()
        loss.backward()
        if all_reduce is not None:
            all_reduce(model)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[WARMUP_STEPS:])


def average_gradients(model: torch.nn.Module) -> None:
    """One flat gloo all-reduce of every gradient, then divide by the world size."""
    grads = [p.grad for p in model.parameters()]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    torch.nn.utils.vector_to_parameters(flat, grads)


def worker(rank: int, mode: str, rows: int, dim: int, steps: int, port: int, results) -> None:
    """One of two one-thread processes; ``mode`` is ``independent``, ``all_reduce`` or ``ddp``."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = autoencoder(dim)
    if mode == "ddp":
        model = DistributedDataParallel(model)
    dist.barrier()
    reduce = average_gradients if mode == "all_reduce" else None
    results[rank] = median_step_ms(model, rows, dim, steps, reduce)
    dist.destroy_process_group()


def two_processes(mode: str, rows: int, dim: int, steps: int, port: int) -> float:
    """Slower rank's median ms per step of two one-thread processes on ``rows`` rows each."""
    results = mp.Manager().dict()
    mp.spawn(worker, args=(mode, rows, dim, steps, port, results), nprocs=2)
    return max(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2400, help="rows per step of one process")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--dim", type=int, default=64, help="input dimension D")
    args = parser.parse_args()
    half = args.rows // 2
    threads = torch.get_num_threads()

    def single(n_threads: int, rows: int) -> float:
        torch.set_num_threads(n_threads)
        torch.manual_seed(0)
        return median_step_ms(autoencoder(args.dim), rows, args.dim, args.steps)

    one = single(threads, args.rows)
    print(f"one process, {threads} threads, {args.rows} rows: {one:.1f} ms/step")
    print(f"one process, 1 thread, {args.rows} rows: {single(1, args.rows):.1f} ms/step")
    print(f"one process, 1 thread, {half} rows: {single(1, half):.1f} ms/step")
    best = float("inf")
    for port, mode in enumerate(["independent", "all_reduce", "ddp"], start=29533):
        ms = two_processes(mode, half, args.dim, args.steps, port)
        print(f"two processes, 1 thread each, {half} rows each, {mode}: {ms:.1f} ms/step")
        if mode != "independent":
            best = min(best, ms)
    print(f"best synchronised two-process speed-up over one process: {one / best:.2f}x")


if __name__ == "__main__":
    main()
