"""Profile DVI training steps on CPU and compare their speed with the network's arithmetic bound.

    python benchmarks/step_profile.py [--steps 60] [--epoch 2] [--top 15] [overrides ...]

Builds one subject epoch's complex of a run (the bundled demo by default; ``content_path=...``
for another), then times the visualizer's training steps outside the Trainer (the datamodule's
own edge stream, the module's own ``training_step``, backward and the optimizer step) and prints:

- the stream's milliseconds per batch and the step's, and the edges per second of the two;
- the arithmetic bound: the autoencoder's training FLOPs per edge (3 x the forward FLOPs of
  the batch's rows through the encoder and of its decoded rows, ``method.recon_rows``, through
  the decoder: the forward and the two products of the backward pass) times
  the FLOP/s a plain matrix-product loop of the same shapes reaches here;
- the profiler's top operators by self CPU time (``--top``).

Extra arguments are Hydra overrides (``method.batch_size=4000``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import ttvis  # noqa: F401  (registers resolvers)
from ttvis.run import TrainingRun
from ttvis.training import timevis_datamodule, training_head

CONF = Path(__file__).resolve().parents[1] / "conf"


def matmul_flops_per_second(rows: int, width: int, seconds: float = 2.0) -> float:
    """FLOP/s of ``[rows, width] @ [width, width]`` products repeated for about ``seconds``."""
    a, b = torch.randn(rows, width), torch.randn(width, width)
    for _ in range(3):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2.0 * rows * width * width * n / (time.perf_counter() - start)


def forward_flops_per_row(dims: list[int]) -> int:
    """Multiply-adds x 2 of one row through linear layers ``dims[0] -> ... -> dims[-1]``."""
    return sum(2 * a * b for a, b in zip(dims[:-1], dims[1:], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--epoch", type=int, default=2, help="subject epoch (its complex)")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config", overrides=["logger=none", "trainer.accelerator=cpu", *args.overrides]
        )
    torch.manual_seed(cfg.seed)
    run = TrainingRun(cfg.content_path)
    if cfg.method.name == "TimeVis":  # one complex over every epoch, as fit_timevis builds it
        dm, head = timevis_datamodule(cfg, run)
    else:
        head = training_head(cfg, run, args.epoch)
        dm = instantiate(cfg.method.datamodule)(run=run, epoch=args.epoch, subject_head=head)
    dm.build()
    dm.setup("fit")
    shift, scale = dm.input_normalisation()
    module = instantiate(cfg.method.module)(
        subject_epoch=args.epoch,
        log_prefix="profile",
        input_shift=shift,
        input_scale=scale,
        subject_head=head,
    )
    module.on_train_epoch_start()
    module._generator = torch.Generator().manual_seed(cfg.seed)
    optimizer = module.configure_optimizers()["optimizer"]

    batches, start = [], time.perf_counter()
    while len(batches) < args.steps:
        for batch in dm.train_dataloader():
            batches.append(batch)
            if len(batches) == args.steps:
                break
    stream_s = (time.perf_counter() - start) / len(batches)

    def train(batches: list[dict]) -> None:
        for i, batch in enumerate(batches):
            loss = module.training_step(batch, i)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    train(batches[: max(1, len(batches) // 10)])  # warm-up
    start = time.perf_counter()
    train(batches)
    step_s = (time.perf_counter() - start) / len(batches)

    edges = batches[0]["head_pos"].shape[0]
    n_mix = round(module.mix_fraction * edges)
    cap = module.recon_rows or float("inf")
    extra = [n_mix + b.get("boundary_x", torch.empty(0)).shape[0] for b in batches]
    rows = np.mean([b["x"].shape[0] + e for b, e in zip(batches, extra, strict=True)])
    decoded = np.mean([min(b["x"].shape[0], cap) + e for b, e in zip(batches, extra, strict=True)])
    ae = module.autoencoder
    step_flops = 3 * (  # every row encoded, the decoded rows (recon_rows) decoded
        rows * forward_flops_per_row(ae.encoder_dims)
        + decoded * forward_flops_per_row(ae.decoder_dims)
    )
    widest = max(ae.encoder_dims[1:-1] or [ae.encoder_dims[0]])
    peak = matmul_flops_per_second(int(rows), widest)
    bound = peak / (step_flops / edges)
    print(f"{run.content_path}, subject epoch {args.epoch}, {torch.get_num_threads()} threads")
    print(
        f"batch: {edges} edges, {rows:.0f} autoencoder rows ({rows / edges:.2f} per edge), "
        f"{decoded:.0f} of them decoded"
    )
    print(f"stream: {1e3 * stream_s:.2f} ms/batch ({edges / stream_s:,.0f} edges/s)")
    print(f"step:   {1e3 * step_s:.2f} ms/batch ({edges / step_s:,.0f} edges/s)")
    print(
        f"bound:  {step_flops / edges / 1e6:.2f} MFLOP/edge x {peak / 1e9:.0f} GFLOP/s "
        f"(matmul [{rows:.0f}, {widest}] @ [{widest}, {widest}]) = {bound:,.0f} edges/s; "
        f"the step reaches {edges / step_s / bound:.0%} of it"
    )
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        train(batches)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))


if __name__ == "__main__":
    main()
