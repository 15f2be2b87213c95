"""Frame times of the interactive viewer on a large run, in headless Chromium.

    python benchmarks/view_frames.py [--points 60000] [--epochs 50] [--classes 10] [--vis 1]
                                     [--seconds 15] [--resolution 300] [--keep DIR]
                                     [--renderers auto webgl canvas]

Writes a synthetic run and export in a temporary folder (or ``--keep DIR``), no training:
``--points`` samples (80% train, 20% test) whose 2-D positions random-walk around class centres
over ``--epochs`` epochs, logits that mostly agree with the labels, one uniform background per
epoch, and ``--vis`` export folders side by side. Then writes the viewer
(:func:`ttvis.view.write_viewer`, the page settings of ``conf/view.yaml``), opens it from
``file://`` in headless Chromium (:mod:`ttvis.view.headless`), plays the animation for
``--seconds`` and prints the time to write the viewer and to load it, the median and 95th
percentile of the intervals between animation frames (``requestAnimationFrame``, measured in the
page), and the time of a mouse move over the first map (hover). Once per ``--renderers`` value
(default: ``auto``, what a user gets, then ``webgl`` and ``canvas`` forced). Chromium runs with
``--disable-gpu``: WebGL is rendered in software (SwiftShader) on the CPU, where ``auto`` picks
the canvas path; a browser with a GPU draws with WebGL.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from PIL import Image

from ttvis.export import class_palette, projection_scale
from ttvis.export_folder import ExportFolder
from ttvis.run import TrainingRun
from ttvis.view import collect_view_data, write_viewer
from ttvis.view.headless import browser_missing, chromium, open_viewer

CONF = Path(__file__).resolve().parents[1] / "conf"
HOVER_MOVES = 200  # synthetic mouse moves across the first map, 2 px apart
# Times HOVER_MOVES mouse moves dispatched to the first map, ms each (the first one builds the
# hover grid of the frame).
HOVER_SCRIPT = """
const stage = document.querySelector('.stage');
const rect = stage.getBoundingClientRect();
const times = [];
for (let i = 0; i < arguments[0]; i++) {
  const t0 = performance.now();
  stage.dispatchEvent(new MouseEvent('mousemove', {clientX: rect.left + 20 + 2 * i,
    clientY: rect.top + rect.height / 2, bubbles: true}));
  times.push(performance.now() - t0);
}
return times;
"""
STEP = 0.15  # random-walk step of a sample per epoch, in class-spread units
SPREAD = 1.0  # spread of a class around its centre
CENTRE_RADIUS = 6.0  # class centres on a circle of this radius


def write_run(root: Path, n: int, epochs: int, classes: int, n_vis: int, side: int) -> None:
    """A run folder with ``n_vis`` export folders (``V0``, ``V1``, ...) under ``root``."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    for sub in ("representation", "prediction", "label"):
        (root / "dataset" / sub).mkdir(parents=True)
    np.save(root / "dataset" / "label" / "labels.npy", labels)
    order = rng.permutation(n)
    split = int(0.8 * n)
    index = {"train": sorted(order[:split].tolist()), "test": sorted(order[split:].tolist())}
    (root / "index.json").write_text(json.dumps(index))
    angle = 2 * np.pi * np.arange(classes) / classes
    centres = CENTRE_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    walks = [centres[labels] + SPREAD * rng.standard_normal((n, 2)) for _ in range(n_vis)]
    palette = (class_palette(classes) * 255).astype(np.uint8)
    for epoch in range(1, epochs + 1):
        np.save(root / "dataset" / "representation" / f"{epoch}.npy", np.zeros((n, 1), np.float32))
        logits = rng.standard_normal((n, classes)).astype(np.float32)
        logits[np.arange(n), labels] += 1.0 + 3.0 * epoch / epochs
        np.save(root / "dataset" / "prediction" / f"{epoch}.npy", logits)
        for v, walk in enumerate(walks):
            walk += STEP * rng.standard_normal(walk.shape)
            folder = root / "visualize" / f"V{v}"
            for sub in ("projection", "scale", "bgimg"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            np.save(folder / "projection" / f"{epoch}.npy", walk.astype(np.float32))
            np.save(folder / "scale" / f"{epoch}.npy", projection_scale(walk).astype(np.float32))
            colour = palette[epoch % classes] // 2 + 127
            image = np.broadcast_to(colour, (side, side, 3)).astype(np.uint8)
            Image.fromarray(image).save(folder / "bgimg" / f"{epoch}.png")


def measure(index: Path, seconds: float, renderer: str) -> dict[str, float]:
    """Load ``index?renderer=RENDERER`` in headless Chromium, play for ``seconds``; the figures
    in ms."""
    from selenium.webdriver.common.action_chains import ActionChains

    with chromium() as driver:
        start = time.perf_counter()
        state = open_viewer(driver, index, timeout=600, query=f"renderer={renderer}")
        load = time.perf_counter() - start
        if not state["ready"]:
            raise SystemExit(f"the page failed: {state['errors']}")
        ActionChains(driver).send_keys(" ").perform()
        time.sleep(seconds)
        frames = np.asarray(driver.execute_script("return window.ttvisView.frameTimes()"))
        ActionChains(driver).send_keys(" ").perform()  # pause (if still playing)
        hover = np.asarray(driver.execute_script(HOVER_SCRIPT, HOVER_MOVES))
        now = driver.execute_script("return window.ttvisView.state()")
    frames = frames[1:]  # the first interval starts at the key press
    return {
        "load_s": load,
        "frames": len(frames),
        "median_ms": float(np.median(frames[:, 0])),
        "p95_ms": float(np.percentile(frames[:, 0], 95)),
        "draw_median_ms": float(np.median(frames[:, 1])),
        "draw_p95_ms": float(np.percentile(frames[:, 1], 95)),
        "hover_first_ms": float(hover[0]),
        "hover_median_ms": float(np.median(hover[1:])),
        "hover_p95_ms": float(np.percentile(hover[1:], 95)),
        "drawn_by": now["renderers"][0],
        "webgl_renderer": now["webglRenderer"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--vis", type=int, default=1, help="export folders side by side")
    parser.add_argument("--seconds", type=float, default=15.0, help="how long to play")
    parser.add_argument("--resolution", type=int, default=300, help="background side, px")
    parser.add_argument("--keep", type=Path, help="write the run here and keep it")
    parser.add_argument(
        "--renderers",
        nargs="+",
        default=["auto", "webgl", "canvas"],
        help="page.renderer values to measure in turn (auto: what a user gets)",
    )
    args = parser.parse_args()
    reason = browser_missing()
    if reason:
        raise SystemExit(reason)
    if args.keep:
        return run_benchmark(args, args.keep)
    with tempfile.TemporaryDirectory(prefix="ttvis-view-frames-") as tmp:
        run_benchmark(args, Path(tmp) / "run")


def run_benchmark(args: argparse.Namespace, root: Path) -> None:
    """Write the run and the viewer under ``root``, measure, print one line."""
    write_run(root, args.points, args.epochs, args.classes, args.vis, args.resolution)
    page = OmegaConf.to_container(OmegaConf.load(CONF / "view.yaml").page)
    start = time.perf_counter()
    run = TrainingRun(root, check_values=False)
    folders = [ExportFolder.of(root, f"V{v}") for v in range(args.vis)]
    data = collect_view_data(run, folders, page["list_size"])
    index = write_viewer(data, root / "visualize" / "view", page)
    written = time.perf_counter() - start
    size = sum(p.stat().st_size for p in index.parent.rglob("*") if p.is_file()) / 2**20
    print(
        f"{args.points} points x {args.epochs} epochs x {args.vis} map(s): viewer written in "
        f"{written:.1f} s ({size:.1f} MB)"
    )
    for renderer in args.renderers:
        r = measure(index, args.seconds, renderer)
        print(
            f"renderer={renderer} (drawn by {r['drawn_by']}; WebGL: {r['webgl_renderer']}): "
            f"loaded in {r['load_s']:.1f} s; {r['frames']} frames, interval median "
            f"{r['median_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms; the page's own drawing per "
            f"frame median {r['draw_median_ms']:.1f} ms, p95 {r['draw_p95_ms']:.1f} ms; hover: "
            f"first move {r['hover_first_ms']:.1f} ms (builds the grid), then median "
            f"{r['hover_median_ms']:.2f} ms, p95 {r['hover_p95_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
