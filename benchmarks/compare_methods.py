"""Time the default DVI and TimeVis runs end to end, side by side, optionally against older code.

    python benchmarks/compare_methods.py [--repeats 3] [--data digits|mnist1d] [--recipe adam]
        [--methods dvi timevis] [--baseline OLD_CHECKOUT] [overrides ...]

Every run is ``python train.py method=M content_path=RUN`` as a user types it (pictures on, no
TensorBoard, no progress bars), in a fresh copy of the demo run of the chosen kind (built once
into the demo cache), timed from start to exit. With ``--baseline`` the same command also runs
from another checkout of ttvis (e.g. a ``git worktree`` of an earlier commit) on the same run,
alternating new and old, so both see the same machine load. Prints every run's wall time, the
medians, new/old per method, and TimeVis's time as a share of DVI's. Extra arguments are Hydra
overrides given to every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ttvis.demo import ensure_demo_run  # noqa: E402

QUIET = ["logger=none", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]


def timed_run(code: Path, run: Path, workdir: Path, overrides: list[str]) -> float:
    """Wall seconds of ``train.py`` from checkout ``code`` on a fresh copy of ``run``."""
    content = workdir / "run"
    shutil.rmtree(content, ignore_errors=True)
    shutil.copytree(run, content, ignore=shutil.ignore_patterns("visualize"))
    env = {**os.environ, "PYTHONPATH": str(code)}
    args = [sys.executable, "train.py", f"content_path={content}", "resume=false", *QUIET]
    args += [f"hydra.run.dir={workdir / 'hydra'}", *overrides]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=code, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{code}: train.py failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["dvi", "timevis"])
    parser.add_argument("--data", default="digits", help="demo data set: digits or mnist1d")
    parser.add_argument("--recipe", default="adam", help="demo training recipe")
    parser.add_argument("--seed", type=int, default=0, help="demo seed")
    parser.add_argument("--baseline", type=Path, default=None, help="an older ttvis checkout")
    parser.add_argument("--cache-dir", default=os.environ.get("TTVIS_CACHE_DIR", "~/.cache/ttvis"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    run = ensure_demo_run(args.cache_dir, seed=args.seed, data=args.data, recipe=args.recipe)
    codes = {"new": REPO} | ({"old": args.baseline.resolve()} if args.baseline else {})
    walls: dict[tuple[str, str], list[float]] = {}
    print(f"run: {run}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for method in args.methods:
                for label, code in codes.items():
                    wall = timed_run(code, run, Path(tmp), [f"method={method}", *args.overrides])
                    walls.setdefault((method, label), []).append(wall)
                    print(f"repeat {i + 1} {method:8s} {label}: {wall:7.1f}s", flush=True)
    median = {key: statistics.median(values) for key, values in walls.items()}
    print(f"median wall time over {args.repeats} repeat(s):")
    for (method, label), value in median.items():
        print(f"  {method:8s} {label}: {value:8.1f}s")
    for label in codes:
        if ("dvi", label) in median and ("timevis", label) in median:
            ratio = median[("timevis", label)] / median[("dvi", label)]
            print(f"  {label}: timevis / dvi = {ratio:.2f}")
    if args.baseline:
        for method in args.methods:
            pairs = zip(walls[(method, "new")], walls[(method, "old")], strict=True)
            ratios = [new / old for new, old in pairs]
            print(
                f"  {method}: new / old = {statistics.median(ratios):.2f} (median of pairs; "
                + ", ".join(f"{r:.2f}" for r in ratios)
                + ")"
            )


if __name__ == "__main__":
    main()
