"""Time the whole default DVI run on the bundled demo and print where the time goes.

    python benchmarks/dvi_speed.py [--repeats 3] [overrides ...]

Each repeat composes the real config (``conf/``), trains every subject epoch and exports, in
a fresh copy of the demo run. Prints per-repeat figures and their medians: wall time, time in
complex construction / visualizer training / export, and training throughput in edges per
second. Extra arguments are Hydra overrides (``method.batch_size=2000``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

import ttvis  # noqa: F401  (registers resolvers)
from ttvis.demo import ensure_demo_run
from ttvis.training import train

CONF = Path(__file__).resolve().parents[1] / "conf"
# Benchmarks time the work, not the console: no logger, no progress bars.
QUIET = ["logger=none", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def one_run(overrides: list[str], workdir: Path) -> dict:
    """Train + export once on a copy of the demo run; return the training summary and wall time."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    demo = ensure_demo_run(cfg.demo.cache_dir, n_epochs=cfg.demo.epochs, seed=cfg.demo.seed)
    content = workdir / "run"
    shutil.rmtree(content, ignore_errors=True)
    shutil.copytree(demo, content, ignore=shutil.ignore_patterns("visualize"))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"content_path={content}", f"paths.log_dir={workdir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    start = time.perf_counter()
    summary = train(cfg)
    summary["wall"] = time.perf_counter() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    overrides = [*QUIET, *args.overrides]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            s = one_run(overrides, Path(tmp))
            sec = s["seconds"]
            row = {
                "wall_s": s["wall"],
                "complex_s": sec["complex"],
                "train_s": sec["train"],
                "export_s": sec["export"],
                "edges_per_s": s["edges"] / max(sec["train"], 1e-9),
                "edges": s["edges"],
            }
            rows.append(row)
            print(f"repeat {i + 1}: " + ", ".join(f"{k}={v:,.1f}" for k, v in row.items()))
    print("median over", len(rows), "repeats:")
    for key in rows[0]:
        print(f"  {key:12s} {statistics.median(r[key] for r in rows):12,.1f}")


if __name__ == "__main__":
    main()
