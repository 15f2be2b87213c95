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

import pytest  # noqa: E402

from ttvis.demo import build_demo_run  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = REPO_ROOT / "conf"

# Demo classifier settings that make a 3-epoch, 240-sample run confident enough (median top-1
# minus top-2 softmax gap ~0.7 in epochs 2-3) for decision regions to show colour.
DEMO_KWARGS = {"n_epochs": 3, "n_samples": 240, "lr": 1e-2, "batch_size": 16, "seed": 0}

# Smallest train.py settings that still train and export every subject epoch.
SMALL_SETTINGS = {
    "trainer.max_epochs": "2",
    "method.s_n_epochs": "1",
    "method.n_neighbors": "5",
    "export.resolution": "40",
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
    given = {_key(a) for a in args if "=" in a and not a.startswith("-")}
    extra = [f"hydra.run.dir={tmp_dir / 'hydra'}"]
    if small:
        extra += [f"{k}={v}" for k, v in SMALL_SETTINGS.items() if k not in given]
    proc = subprocess.run(
        [sys.executable, "train.py", *args, *extra],
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
