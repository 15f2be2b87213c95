"""k-NN backends against the numpy brute-force reference, the one backend rule, NN-descent from
a previous graph, and numba's on-disk cache across processes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from ttvis.complex import neighbour_overlap
from ttvis.datamodules import DVIDataModule
from ttvis.knn import (
    NNDESCENT,
    NUMPY,
    SKLEARN,
    TORCH,
    brute_force_knn,
    exact_knn,
    knn_backend,
    nearest_neighbours,
    torch_knn,
)
from ttvis.numba_cache import numba_cache_dir
from ttvis.run import TrainingRun

K = 10


def clustered(n: int, dim: int, seed: int = 0, n_classes: int = 10) -> np.ndarray:
    """``[n, dim]`` float32 points around ``n_classes`` well separated centres."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * rng.normal(size=(n_classes, dim))
    return (centres[rng.integers(0, n_classes, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_torch_knn_on_cpu_matches_brute_force():
    x = clustered(300, 16)
    ref = brute_force_knn(x, x, K, self_first=True)
    got = torch_knn(x, x, K, "cpu", chunk_rows=41, self_first=True)  # partial last block
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.dists, ref.dists, rtol=1e-6, atol=1e-6)
    assert got.indices.dtype == np.int64 and got.dists.dtype == np.float32
    queries = clustered(50, 16, seed=1)
    ref = brute_force_knn(x, queries, K)
    got = torch_knn(x, queries, K, torch.device("cpu"), chunk_rows=7)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_allclose(got.dists, ref.dists, rtol=1e-6, atol=1e-6)


def test_torch_knn_puts_self_first_among_duplicates():
    x = np.zeros((6, 3), np.float32)
    got = torch_knn(x, x, 3, "cpu", self_first=True)
    np.testing.assert_array_equal(got.indices[:, 0], np.arange(6))
    assert (got.dists == 0).all()


def test_one_rule_decides_the_backend():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert knn_backend(9_999, 10_000, cpu) == NUMPY
    assert knn_backend(10_000, 10_000, cpu) == NNDESCENT
    assert knn_backend(10_000, 10_000, cpu, approximate=False) == SKLEARN
    assert knn_backend(60_000, 10_000, cuda) == TORCH  # exact on a GPU, whatever the size
    assert knn_backend(100, 10_000, cuda, metric="cosine") == NNDESCENT


def test_exact_knn_on_cpu_is_the_brute_force_reference():
    x = clustered(200, 8)
    np.testing.assert_array_equal(
        exact_knn(x, K, device="cpu").indices, brute_force_knn(x, x, K, self_first=True).indices
    )


def test_nndescent_from_the_previous_graph_finds_the_exact_neighbours():
    """Epoch e+1 = epoch e drifted: NN-descent started from epoch e's exact graph (no trees)
    recovers >= 95% of epoch e+1's exact neighbours, as it does from scratch."""
    before = clustered(3000, 32)
    rng = np.random.default_rng(5)
    after = (before * 1.1 + 0.5 * rng.normal(size=before.shape)).astype(np.float32)
    prev = exact_knn(before, K, device="cpu")
    truth = exact_knn(after, K, device="cpu").indices
    stale = neighbour_overlap(prev.indices, truth).mean() / K
    got = nearest_neighbours(after, K, exact_below=0, device="cpu", init=prev)
    recall = neighbour_overlap(got.indices, truth).mean() / K
    assert stale < 0.9, f"the drift must change the neighbours (kept {stale:.3f})"
    assert recall >= 0.95, f"recall {recall:.3f} from the previous graph"
    np.testing.assert_array_equal(got.indices[:, 0], np.arange(3000))


def test_dvi_starts_nn_descent_from_the_previous_epochs_graph(demo_run, caplog):
    """Above knn.exact_below, DVI's epoch-2 k-NN starts from epoch 1's graph and is as good."""
    run = TrainingRun(demo_run)
    first = DVIDataModule(run, epoch=1, n_neighbors=K, exact_knn_below=0)
    first.build()
    second = DVIDataModule(run, epoch=2, n_neighbors=K, exact_knn_below=0, prev_knn=first.knn)
    with caplog.at_level(logging.INFO, logger="ttvis.knn"):
        second.build()
    assert "nndescent from the previous graph" in caplog.text
    truth = exact_knn(run.train_representations(2), K, device="cpu").indices
    assert neighbour_overlap(second.knn.indices, truth).mean() / K >= 0.95


_CHILD = textwrap.dedent(
    """
    import numpy as np
    import ttvis  # sets NUMBA_CACHE_DIR before numba is imported
    from ttvis.complex import spatial_complex
    import pynndescent.pynndescent_ as nnd
    import umap.umap_ as um

    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    spatial_complex(x, 10, 5, exact_below=0)  # pynndescent, then umap's fuzzy set
    for f in (nnd.init_rp_tree, um.compute_membership_strengths):
        s = f.stats
        print(f.py_func.__name__, sum(s.cache_hits.values()), sum(s.cache_misses.values()))
    """
)


@pytest.mark.slow
def test_numba_code_is_compiled_once_per_machine(tmp_path):
    """A second process loads pynndescent's and umap's compiled code from the cache folder,
    including a function that takes the distance function as an argument (init_rp_tree)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(numba_cache_dir()), CUDA_VISIBLE_DEVICES="")
    for _ in range(2):  # the first may compile (a cold cache), the second must not
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode == 0, proc.stderr
    for line in proc.stdout.strip().splitlines():
        name, hits, misses = line.split()
        assert int(hits) >= 1 and int(misses) == 0, f"{name}: {hits} hits, {misses} misses"


_THREADS_CHILD = textwrap.dedent(
    """
    import numpy as np, numba, torch
    from ttvis.complex import spatial_complex
    x = np.random.default_rng(0).normal(size=(600, 8)).astype(np.float32)
    before = torch.get_num_threads()
    spatial_complex(x, 10, 5.0, exact_below=100)  # NN-descent and the fuzzy set: numba code
    print(before, torch.get_num_threads(), numba.get_num_threads())
    """
)


def test_numba_leaves_torch_thread_count_as_it_was():
    """A process told to use one thread (as Lightning's DDP tells each of its CPU processes)
    keeps one after numba's two-thread pool has started for a complex."""
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-c", _THREADS_CHILD], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    before, after, numba_threads = proc.stdout.split()
    assert (before, after, numba_threads) == ("1", "1", "2")


def test_numba_cache_folder_follows_the_documented_settings(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("TTVIS_CACHE_DIR", str(tmp_path / "ttvis"))
    assert numba_cache_dir() == tmp_path / "ttvis" / "numba"
    monkeypatch.delenv("TTVIS_CACHE_DIR")
    assert numba_cache_dir() == Path("~/.cache/ttvis/numba").expanduser()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    assert numba_cache_dir() == tmp_path / "mine"


def test_importing_ttvis_sets_numba_cache_dir_before_numba(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TTVIS_CACHE_DIR"] = str(tmp_path)
    code = "import ttvis, numba.core.config as c; print(c.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == str(tmp_path / "numba"), out.stderr


def test_a_cache_folder_that_cannot_be_made_is_left_to_numba(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TTVIS_CACHE_DIR"] = str(tmp_path / "file")  # {it}/numba cannot be created
    code = "import os, ttvis; print(os.environ.get('NUMBA_CACHE_DIR', 'unset'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "unset", out.stderr
