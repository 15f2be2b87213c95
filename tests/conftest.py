"""Shared fixtures: one tiny real demo run per session, copies of it, and a train.py runner.

Every test works on real data: the demo run is a real classifier trained on scikit-learn's
digits (240 samples, 3 saved epochs). Tests that write into a run folder work on a copy.
"""

from __future__ import annotations

import os

# Numba's OpenMP threading layer (loaded with umap/pynndescent) resets the process-wide OpenMP
# thread count to all cores, which torch shares. On a small shared machine two spinning OpenMP
# threads made each tiny visualizer step ~70x slower than one thread, so the suite pins both
# to one thread (unless the caller chose otherwise). This must run before numba is imported.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import image as mpl_image  # noqa: E402

from ttvis.demo import build_demo_run  # noqa: E402
from ttvis.modules import Autoencoder  # noqa: E402
from ttvis.run import TrainingRun  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

# Demo classifier settings that make a 3-epoch, 240-sample run confident enough (median top-1
# minus top-2 softmax gap ~0.7 in epochs 2-3) for decision regions to show colour.
DEMO_KWARGS = {"n_epochs": 3, "n_samples": 240, "lr": 1e-2, "batch_size": 16, "seed": 0}

# Background side of the small end-to-end runs' images.
RESOLUTION = 40

# Smallest train.py settings that still train and export every subject epoch.
SMALL_SETTINGS = {
    "trainer.max_epochs": "2",
    "method.s_n_epochs": "1",
    "method.n_neighbors": "5",
    "export.resolution": str(RESOLUTION),
    "model.hidden_dims": "[32]",
    "logger": "none",
    "callbacks.progress_bar": "null",
}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A tiny real demo run (read-only for tests: copy it before writing)."""
    return build_demo_run(tmp_path_factory.mktemp("demo") / "run", **DEMO_KWARGS)


def copy_run(src: Path, dst: Path) -> Path:
    """Copy a run folder to ``dst`` (which must not exist) and return ``dst``."""
    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def run_copy(demo_run, tmp_path) -> Path:
    """A private, writable copy of the demo run."""
    return copy_run(demo_run, tmp_path / "run")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def train_env(tmp_dir: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a train.py subprocess: cache in ``tmp_dir``, one thread per process."""
    out = dict(os.environ)
    out.update(
        {
            "TTVIS_CACHE_DIR": str(tmp_dir / "cache"),
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1",
            "HYDRA_FULL_ERROR": "1",
        }
    )
    out.update(env or {})
    return out


def train_command(args: Iterable[str], tmp_dir: Path, small: bool = True) -> list[str]:
    """``[python, train.py, *args, ...]`` with Hydra's run folder in ``tmp_dir/hydra`` and, when
    ``small``, :data:`SMALL_SETTINGS` for the keys that ``args`` leaves out."""
    args = list(args)
    given = {_key(a) for a in args if "=" in a and not a.startswith("-")}
    extra = [f"hydra.run.dir={tmp_dir / 'hydra'}"]
    if small:
        extra += [f"{k}={v}" for k, v in SMALL_SETTINGS.items() if k not in given]
    return [sys.executable, "train.py", *args, *extra]


def run_train(
    args: Iterable[str],
    tmp_dir: Path,
    cwd: Path = REPO_ROOT,
    env: dict[str, str] | None = None,
    small: bool = True,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``python train.py ARGS`` with Hydra's output in ``tmp_dir/hydra`` and small settings.

    Args:
        args: Hydra overrides (and flags such as ``--cfg job``); they win over the small
            settings for the same key.
        tmp_dir: a per-test temporary folder; the demo cache and Hydra's run folder go there,
            so nothing lands in the repository's ``outputs/``.
        cwd: working directory (the repository root).
        env: extra environment variables.
        small: add :data:`SMALL_SETTINGS` for the keys that ``args`` leaves out.
        check: fail the test with the captured output when the exit status is not 0.
        timeout: seconds.

    Returns:
        The completed process, with ``stdout``/``stderr`` as text.
    """
    args = list(args)
    proc = subprocess.run(
        train_command(args, tmp_dir, small),
        cwd=cwd,
        env=train_env(tmp_dir, env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"train.py {' '.join(args)} exited with {proc.returncode}\n"
            f"--- stdout (tail)\n{proc.stdout[-4000:]}\n--- stderr (tail)\n{proc.stderr[-6000:]}"
        )
    return proc


def run_evaluate(args: Iterable[str], tmp_dir: Path, timeout: float = 300):
    """Run ``python evaluate.py ARGS`` with Hydra's output in ``tmp_dir/evaluate``; fail the
    test with its stderr when the exit status is not 0. Returns the completed process."""
    proc = subprocess.run(
        [sys.executable, "evaluate.py", *args, f"hydra.run.dir={tmp_dir / 'evaluate'}"],
        cwd=REPO_ROOT,
        env=train_env(tmp_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def check_export(
    content_path: Path,
    epochs: list[int],
    resolution: int = RESOLUTION,
    vis: Path | None = None,
    spread: bool = True,
) -> Path:
    """Assert a complete, valid DVI export for exactly ``epochs``; return the export folder.

    Args:
        content_path: the run folder.
        epochs: the subject epochs that must have been exported, and no others.
        resolution: the background images' side.
        vis: the export folder (default ``content_path/visualize/DVI``).
        spread: also require every projection to be spread out (not one point).
    """
    run = TrainingRun(content_path)
    vis = vis or content_path / "visualize" / "DVI"
    for sub in ("projection", "scale", "vismodel"):
        assert sorted(p.name for p in (vis / sub).iterdir()) == sorted(
            f"{e}.{'pth' if sub == 'vismodel' else 'npy'}" for e in epochs
        ), sub
    assert sorted(p.name for p in (vis / "bgimg").iterdir()) == sorted(f"{e}.png" for e in epochs)
    for epoch in epochs:
        proj = np.load(vis / "projection" / f"{epoch}.npy")
        assert proj.dtype == np.float32 and proj.shape == (run.shape.n_points, 2)
        assert np.isfinite(proj).all()
        assert not spread or proj.std(0).min() > 0, "collapsed projection"
        scale = np.load(vis / "scale" / f"{epoch}.npy")
        assert scale.shape == (4,) and np.isfinite(scale).all()
        x_min, y_min, x_max, y_max = scale
        assert x_min < x_max and y_min < y_max
        assert (proj[:, 0] >= x_min).all() and (proj[:, 0] <= x_max).all()
        assert (proj[:, 1] >= y_min).all() and (proj[:, 1] <= y_max).all()
        image = mpl_image.imread(vis / "bgimg" / f"{epoch}.png")
        assert image.shape[:2] == (resolution, resolution)

        saved = torch.load(vis / "vismodel" / f"{epoch}.pth", weights_only=True)
        assert set(saved) >= {"state_dict", "encoder_dims", "decoder_dims"}
        dim = run.shape.dim
        assert saved["encoder_dims"][0] == dim and saved["encoder_dims"][-1] == 2
        assert saved["decoder_dims"][0] == 2 and saved["decoder_dims"][-1] == dim
        net = Autoencoder(saved["encoder_dims"], saved["decoder_dims"])
        net.load_state_dict(saved["state_dict"])
        # The saved visualizer is the one that produced the projection.
        reps = torch.from_numpy(np.array(run.representations(epoch), dtype=np.float32))
        with torch.no_grad():
            np.testing.assert_allclose(net.encoder(reps).numpy(), proj, rtol=1e-4, atol=1e-4)
    leftovers = [p for p in vis.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, f"temporary files left behind: {leftovers}"
    return vis
