"""What a CIFAR-10/ResNet-sized run costs: DVI and TimeVis with the default settings on a
synthetic run of N samples x D dimensions, per subject epoch.

    python benchmarks/scale.py --n 60000 --dim 512 --epochs 3
    python benchmarks/scale.py --n 20000 --methods dvi --evaluate
    python benchmarks/scale.py --device cuda --n 60000 --dim 512 --epochs 20
    python benchmarks/scale.py --n 2000 --dim 64 --epochs 2 trainer.max_epochs=1 \
        dvi:method.warm_max_epochs=1 timevis:method.max_epochs=1     # Hydra overrides

The run (``synthetic.write_run``: 10 classes drifting apart over the epochs, 80/20 split, the
logits of a linear head) is built once into ``{TTVIS_CACHE_DIR or ~/.cache/ttvis}/bench/``
and reused. Each method then trains in its own process (so its peak RSS is its own) from the
real config (``conf/``, composed as ``train.py`` does, ``resume=false``, no logger),
exporting into the run's ``visualize/``. Printed per subject epoch: seconds of the k-NN, of the
whole complex, of training (edges per second and edge draws per visualizer epoch per
point), of the exports and of the pictures; then the peak RSS. While a method runs, its log
lines (each complex, visualizer epoch and export as it ends) are echoed with ``|``, so a long
run shows where it is. ``--evaluate`` also times ``evaluate.py`` on the exports. Extra
arguments are Hydra overrides for both methods, or for one when prefixed ``dvi:`` or ``timevis:``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from synthetic import write_run

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF = REPO_ROOT / "conf"
# No logger; the progress callback writes one log line per visualizer epoch (stderr is a pipe).
QUIET = ["logger=none"]
METHODS = {"dvi": "DVI", "timevis": "TimeVis"}
RESULT_TAG = "SCALE_RESULT "  # the child's one line of JSON on stdout
PROGRESS_TAG = "SCALE_LOG "  # starts each of the child's ttvis log lines on stderr


def cached_run(n: int, dim: int, epochs: int, seed: int) -> Path:
    """The synthetic run folder for these sizes, built (atomically) on first use."""
    base = Path(os.environ.get("TTVIS_CACHE_DIR") or "~/.cache/ttvis").expanduser() / "bench"
    root = base / f"scale-n{n}-d{dim}-e{epochs}-s{seed}"
    if not (root / "index.json").exists():
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=base))
        start = time.perf_counter()
        write_run(tmp, epochs, n, dim, seed)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
        print(f"built {root} in {time.perf_counter() - start:.0f}s", flush=True)
    return root


class KNNSeconds(logging.Handler):
    """Collects the seconds of every k-NN search ``ttvis.knn`` logs, in order."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if hasattr(record, "seconds"):
            self.seconds.append(float(record.seconds))


def child(method: str, run: Path, overrides: list[str]) -> None:
    """Train ``method`` on ``run`` in this process; print the summary as one JSON line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    import ttvis  # noqa: F401  (registers resolvers)
    from ttvis.training import train

    progress = logging.StreamHandler(sys.stderr)
    progress.setFormatter(logging.Formatter(PROGRESS_TAG + "%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("ttvis").addHandler(progress)
    logging.getLogger("ttvis").setLevel(logging.INFO)
    knn_log = KNNSeconds()
    logging.getLogger("ttvis.knn").addHandler(knn_log)
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=[
                    f"method={method}",
                    f"content_path={run}",
                    f"paths.log_dir={tmp}",
                    "resume=false",
                    *QUIET,
                    *overrides,
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        summary = train(cfg)
    summary["knn_seconds"] = knn_log.seconds
    summary["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary["n_train_points"] = len(json.loads((run / "index.json").read_text())["train"])
    print(RESULT_TAG + json.dumps(summary, default=str), flush=True)


def device_env(device: str) -> dict[str, str]:
    """The environment of the child processes: with ``cpu``, no GPU is visible (the k-NN would
    otherwise use one)."""
    env = dict(os.environ)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_child(method: str, run: Path, overrides: list[str], device: str) -> dict:
    """:func:`child` in a fresh process; its summary. The child's ``ttvis`` log lines are
    echoed as they come (prefixed ``|``)."""
    cmd = [sys.executable, __file__, "--child", method, "--run", str(run), *overrides]
    tail: collections.deque[str] = collections.deque(maxlen=60)
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=device_env(device),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        for line in proc.stderr:
            tail.append(line)
            if line.startswith(PROGRESS_TAG):
                print(f"  | {line[len(PROGRESS_TAG) :].rstrip()}", flush=True)
        proc.wait()
        out.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{method} failed (exit {proc.returncode}):\n{''.join(tail)[-4000:]}")
    return json.loads(lines[-1][len(RESULT_TAG) :])


def report_dvi(s: dict) -> None:
    """Per subject epoch rows of a DVI summary."""
    n = s["n_train_points"]
    knn = s["knn_seconds"]
    print("  epoch   k-NN s  complex s  train s   edges/s  draws/pt  export s  pictures s")
    for i, (epoch, e) in enumerate(s["per_epoch"].items()):
        cb = e["callbacks"]
        print(
            f"  {epoch:>5}  {knn[i] if i < len(knn) else float('nan'):7.1f}  {e['complex']:9.1f}"
            f"  {e['train']:7.1f}  {e['edges'] / max(e['train'], 1e-9):8,.0f}"
            f"  {e['draws_per_epoch'] / n:8.1f}  {cb.get('ExportCallback', 0.0):8.1f}"
            f"  {cb.get('PlotCallback', 0.0):10.1f}"
        )


def report_timevis(s: dict, epochs: int) -> None:
    """The one fit of a TimeVis summary, with the k-NN per subject epoch."""
    sec, cb = s["seconds"], s["callbacks"]
    knn = ", ".join(f"{t:.1f}" for t in s["knn_seconds"])
    print(f"  k-NN per subject epoch s: {knn}")
    print(
        f"  complex {sec['complex']:.1f}s ({sec['complex'] / epochs:.1f}s per subject epoch), "
        f"training {sec['train']:.1f}s ({s['edges'] / max(sec['train'], 1e-9):,.0f} edges/s, "
        f"{s['draws_per_epoch'] / s['vertices']:.1f} draws per vertex per visualizer epoch, "
        f"{s['vertices']:,} vertices), export {cb.get('ExportCallback', 0.0):.1f}s, "
        f"pictures {cb.get('PlotCallback', 0.0):.1f}s"
    )


def evaluate(run: Path, vis: str, device: str) -> float:
    """Seconds of ``evaluate.py`` on ``run``'s ``vis`` exports (its own process)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "evaluate.py",
            f"content_path={run}",
            f"vis={vis}",
            f"device={device}",
            "tensorboard_dir=null",
            f"hydra.run.dir={tmp}",
        ]
        env = device_env(device)
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"evaluate.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def for_method(method: str, overrides: list[str]) -> list[str]:
    """The overrides for ``method``: unprefixed ones and ``{method}:`` ones, prefix removed."""
    out = []
    for override in overrides:
        prefix, sep, rest = override.partition(":")
        if not sep or prefix not in METHODS:
            out.append(override)
        elif prefix == method:
            out.append(rest)
    return out


def joined_methods(argv: list[str]) -> list[str]:
    """``argv`` with ``--methods dvi timevis`` as ``--methods=dvi,timevis``: only the words
    after ``--methods`` that name a method are its values, so Hydra overrides may follow."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] != "--methods":
            out.append(argv[i])
            i += 1
            continue
        end = i + 1
        while end < len(argv) and argv[end] in METHODS:
            end += 1
        if (
            end == i + 1
            and end < len(argv)
            and not argv[end].startswith("-")
            and "=" not in argv[end]
        ):
            end += 1  # a misspelt method, for methods_of to name
        out.append("--methods=" + ",".join(argv[i + 1 : end]))
        i = end
    return out


def methods_of(text: str) -> list[str]:
    """``"dvi,timevis"`` -> ``["dvi", "timevis"]``, each checked against :data:`METHODS`."""
    names = [name for name in text.split(",") if name]
    if not names or any(name not in METHODS for name in names):
        raise argparse.ArgumentTypeError(f"expected some of {', '.join(METHODS)}, got {text!r}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60_000, help="samples (80%% train)")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--methods", type=methods_of, default=list(METHODS), help=f"some of {', '.join(METHODS)}"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--evaluate", action="store_true", help="also time evaluate.py")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=sorted(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    opts, overrides = parser.parse_known_args(joined_methods(sys.argv[1:]))
    if any(o.startswith("--") for o in overrides):
        parser.error(f"unrecognized arguments: {' '.join(o for o in overrides if o[:2] == '--')}")
    if opts.child:
        child(opts.child, opts.run, overrides)
        return
    run = cached_run(opts.n, opts.dim, opts.epochs, opts.seed)
    accelerator = "gpu" if opts.device == "cuda" else "cpu"
    overrides = [f"trainer.accelerator={accelerator}", *overrides]
    print(
        f"run {run}: {opts.n} samples x {opts.dim}, {opts.epochs} epochs; {opts.device}; "
        f"overrides: {' '.join(overrides)}",
        flush=True,
    )
    for method in opts.methods:
        start = time.perf_counter()
        summary = run_child(method, run, for_method(method, overrides), opts.device)
        wall = time.perf_counter() - start
        print(f"{METHODS[method]}: {wall:.1f}s wall, peak RSS {summary['peak_rss_mib']:,.0f} MiB")
        if method == "dvi":
            report_dvi(summary)
        else:
            report_timevis(summary, opts.epochs)
        if opts.evaluate:
            seconds = evaluate(run, METHODS[method], opts.device)
            print(
                f"  evaluate.py: {seconds:.1f}s ({seconds / opts.epochs:.1f}s per subject epoch)",
                flush=True,
            )


if __name__ == "__main__":
    main()
