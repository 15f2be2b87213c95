"""Time the default DVI and TimeVis runs on the bundled demo, side by side.

    python benchmarks/compare_methods.py [--repeats 1] [--methods dvi timevis] [overrides ...]

Each repeat trains and exports every method once, each in a fresh copy of the demo run (via
``dvi_speed.one_run``), alternating methods so that both see the same machine load. Prints
per-run figures, the medians, and TimeVis's wall time as a share of DVI's (the issue's speed
bar: below 1). Extra arguments are Hydra overrides applied to every method.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dvi_speed import QUIET, one_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", nargs="+", default=["dvi", "timevis"])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    base = [*QUIET, *args.overrides]
    walls: dict[str, list[float]] = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for method in args.methods:
                s = one_run([f"method={method}", *base], Path(tmp) / method)
                sec = s["seconds"]
                walls[method].append(s["wall"])
                print(
                    f"repeat {i + 1} {method:8s} wall={s['wall']:7.1f}s "
                    f"complex={sec['complex']:6.1f}s train={sec['train']:7.1f}s "
                    f"export={sec['export']:5.1f}s edges={s['edges']:,}",
                    flush=True,
                )
    print(f"median wall time over {args.repeats} repeat(s):")
    for method, values in walls.items():
        print(f"  {method:8s} {statistics.median(values):8.1f}s")
    if "dvi" in walls and "timevis" in walls:
        ratio = statistics.median(walls["timevis"]) / statistics.median(walls["dvi"])
        print(f"  timevis / dvi = {ratio:.2f} ({1 / ratio:.1f}x faster)")


if __name__ == "__main__":
    main()
