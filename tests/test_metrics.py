"""Quality metrics (docs/design.md §7) against brute-force references, and evaluate.py end to end.

The references below are deliberately naive (Python loops, sets, ``math.exp``) so that they
are obviously right; the library versions are vectorised and must agree with them exactly.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, copy_run, train_env

from ttvis.boundary import boundary_points
from ttvis.evaluation import EvaluationError, evaluate_visualization
from ttvis.export import atomic_save_npy, atomic_torch_save
from ttvis.export_folder import ExportError
from ttvis.knn import KNNGraph
from ttvis.metrics import (
    PER_EPOCH_KEYS,
    _drop_self,
    boundary_preserving,
    inverse_confidence_drop,
    knn_indices,
    neighbour_preserving,
    neighbour_preserving_subset,
    neighbour_preserving_test,
    neighbour_vote_agreement,
    prediction_preserving,
    temporal_correlations,
    temporal_preserving,
)
from ttvis.metrics_report import format_table
from ttvis.modules.autoencoder import Autoencoder
from ttvis.run import TrainingRun
from ttvis.subject import load_subject_head

K = 5

# ------------------------------------------------------------------ brute-force references


def brute_neighbours(x: np.ndarray, i: int, k: int) -> set[int]:
    """The k points nearest to ``x[i]`` among all other rows of ``x``."""
    dists = [(float(np.sqrt(((x[i] - x[j]) ** 2).sum())), j) for j in range(len(x)) if j != i]
    return {j for _, j in sorted(dists)[:k]}


def brute_preserving(high: np.ndarray, low: np.ndarray, rows, k: int) -> list[int]:
    return [len(brute_neighbours(high, i, k) & brute_neighbours(low, i, k)) for i in rows]


def brute_softmax(row) -> list[float]:
    exps = [math.exp(v) for v in row]
    return [e / sum(exps) for e in exps]


def brute_pearson(a: list[float], b: list[float]) -> float | None:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb)


def brute_temporal(reps: list[np.ndarray], lows: list[np.ndarray], k: int) -> float:
    """Per sample: kept share of k-NN and 2-D movement per epoch pair, Pearson, mean."""
    n = len(reps[0])
    corrs = []
    for i in range(n):
        rates, moves = [], []
        for t in range(1, len(reps)):
            prev, curr = brute_neighbours(reps[t - 1], i, k), brute_neighbours(reps[t], i, k)
            rates.append(len(prev & curr) / k)
            moves.append(float(np.sqrt(((lows[t][i] - lows[t - 1][i]) ** 2).sum())))
        corr = brute_pearson(rates, moves)
        if corr is not None:
            corrs.append(corr)
    return sum(corrs) / len(corrs) if corrs else math.nan


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ------------------------------------------------------------------ k-NN and neighbour preserving


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["brute-force", "sklearn"])
def test_knn_indices_excludes_self_and_matches_brute_force(rng, exact_below):
    x = rng.normal(size=(40, 8))
    knn = knn_indices(x, K, exact_below=exact_below)
    assert knn.shape == (40, K) and knn.dtype == np.int64
    for i in range(40):
        assert i not in knn[i]
        assert set(knn[i].tolist()) == brute_neighbours(x, i, K)
    rows = np.array([3, 17, 39])
    sub = knn_indices(x, K, rows, exact_below=exact_below)
    assert [set(r.tolist()) for r in sub] == [brute_neighbours(x, i, K) for i in rows]


def test_knn_indices_rejects_k_too_large(rng):
    with pytest.raises(ValueError, match="k=10"):
        knn_indices(rng.normal(size=(10, 3)), 10)


def test_drop_self_handles_queries_missing_from_their_own_list():
    found = np.array([[4, 0, 2], [1, 0, 3], [5, 6, 7]])
    kept = _drop_self(found, np.array([0, 3, 9]))
    np.testing.assert_array_equal(kept, [[4, 2], [1, 0], [5, 6]])


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["brute-force", "sklearn"])
def test_neighbour_preserving_matches_brute_force(rng, exact_below):
    high = rng.normal(size=(40, 8))
    low = high[:, :2] + 0.5 * rng.normal(size=(40, 2))  # related, so overlaps vary
    got = neighbour_preserving(high, low, K, exact_below=exact_below)
    assert got.tolist() == brute_preserving(high, low, range(40), K)
    assert 0 < got.mean() < K


def test_neighbour_preserving_identical_spaces_give_k(rng):
    points = rng.normal(size=(40, 2))
    np.testing.assert_array_equal(neighbour_preserving(points, points.copy(), K), np.full(40, K))


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["brute-force", "sklearn"])
def test_neighbour_preserving_subset_searches_among_all_points(rng, exact_below):
    high = rng.normal(size=(40, 8))
    low = rng.normal(size=(40, 2))
    rows = np.arange(30, 40)  # "test" rows; neighbours come from train and test alike
    got = neighbour_preserving_subset(high, low, rows, K, exact_below=exact_below)
    assert got.tolist() == brute_preserving(high, low, rows, K)
    got = neighbour_preserving_test(high[:30], low[:30], high[30:], low[30:], K, exact_below)
    assert got.tolist() == brute_preserving(high, low, rows, K)


def test_boundary_preserving_matches_brute_force(rng):
    high, low = rng.normal(size=(30, 6)), rng.normal(size=(30, 2))
    b_high = rng.normal(size=(20, 6))
    b_low = b_high[:, :2] + 0.3 * rng.normal(size=(20, 2))
    k = 5

    def nearest(points, boundary):
        d = ((points[:, None, :] - boundary[None, :, :]) ** 2).sum(-1)
        return [set(np.argsort(row, kind="stable")[:k].tolist()) for row in d]

    expected = [
        len(a & b) for a, b in zip(nearest(high, b_high), nearest(low[:, :2], b_low), strict=True)
    ]
    got = boundary_preserving(high, low, b_high, b_low, k)
    assert got.tolist() == expected
    same = boundary_preserving(high, high[:, :2], b_high, b_high[:, :2], k)
    assert same.tolist() == [
        len(a & b)
        for a, b in zip(nearest(high, b_high), nearest(high[:, :2], b_high[:, :2]), strict=True)
    ]


# ------------------------------------------------------------------ prediction metrics


def test_prediction_preserving_hand_made():
    x = np.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [1.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    recon = np.array([[3.0, 0.0, 0.0], [2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0]])
    assert prediction_preserving(x, recon) == 0.5
    assert prediction_preserving(torch.from_numpy(x), torch.from_numpy(x)) == 1.0


def test_prediction_preserving_matches_brute_force(rng):
    x, recon = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    agree = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(x, recon, strict=True))
    assert prediction_preserving(x, recon) == pytest.approx(agree / 40)


@pytest.mark.parametrize("exact_below", [10**9, 0], ids=["brute-force", "sklearn"])
def test_neighbour_vote_agreement_matches_brute_force(rng, exact_below):
    train, query = rng.normal(size=(40, 6)), rng.normal(size=(25, 6))
    train_pred, query_pred = rng.integers(0, 3, size=40), rng.integers(0, 3, size=25)
    agree = 0
    for q, pred in zip(query, query_pred, strict=True):
        dists = sorted((float(np.sqrt(((q - t) ** 2).sum())), j) for j, t in enumerate(train))
        votes = [int(train_pred[j]) for _, j in dists[:K]]
        majority = max(range(3), key=lambda c: (votes.count(c), -c))  # ties: smallest class
        agree += int(majority == pred)
    got = neighbour_vote_agreement(train, train_pred, query, query_pred, K, exact_below)
    assert got == pytest.approx(agree / 25)


def test_neighbour_vote_agreement_hand_made_and_errors():
    train = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    train_pred = np.array([0, 0, 1, 1, 1])
    query = np.array([[0.5], [10.5]])
    # k = 3: the first query's neighbours predict 0, 0, 1 (agrees with 0); the second's 1, 1, 1.
    assert neighbour_vote_agreement(train, train_pred, query, np.array([0, 0]), 3) == 0.5
    assert neighbour_vote_agreement(train, train_pred, query, np.array([0, 1]), 3) == 1.0
    assert math.isnan(neighbour_vote_agreement(train, train_pred, query[:0], np.array([]), 3))
    with pytest.raises(ValueError, match="one prediction per row"):
        neighbour_vote_agreement(train, train_pred[:4], query, np.array([0, 1]), 3)


def test_inverse_confidence_drop_hand_made():
    # x: tie -> class 0, p = 1/2; recon: p(class 0) = 3 / (3 + 1) = 3/4. Second row unchanged.
    x = np.array([[0.0, 0.0], [1.0, 2.0]])
    recon = np.array([[math.log(3.0), 0.0], [1.0, 2.0]])
    assert inverse_confidence_drop(x, recon) == pytest.approx(0.25 / 2)
    assert inverse_confidence_drop(x, x) == 0.0


def test_inverse_confidence_drop_matches_brute_force(rng):
    x, recon = 3 * rng.normal(size=(40, 4)), 3 * rng.normal(size=(40, 4))
    drops = []
    for a, b in zip(x, recon, strict=True):
        c = int(np.argmax(a))
        drops.append(abs(brute_softmax(a)[c] - brute_softmax(b)[c]))
    assert inverse_confidence_drop(x, recon) == pytest.approx(sum(drops) / 40, abs=1e-12)


def test_prediction_metrics_reject_mismatched_shapes():
    with pytest.raises(ValueError):
        prediction_preserving(np.zeros((3, 2)), np.zeros((3, 3)))


# ------------------------------------------------------------------ temporal preserving


def constructed_history(kept: np.ndarray, k: int, sign: float, rng) -> tuple[list, list]:
    """k-NN lists whose consecutive overlap is ``kept[t, i]``, and positions moving by
    ``1 - kept/k`` (sign -1: exactly anti-correlated) or ``kept/k`` (sign +1).

    Args:
        kept: ``[P, M]`` int neighbours kept from epoch t to t+1, in 0..k.
    """
    n_pairs, m = kept.shape
    fresh = iter(range(10**6))  # neighbour ids never used before
    knn = [np.array([[next(fresh) for _ in range(k)] for _ in range(m)])]
    pos = [rng.normal(size=(m, 2))]
    for t in range(n_pairs):
        nxt = knn[-1].copy()
        for i in range(m):
            for col in range(kept[t, i], k):
                nxt[i, col] = next(fresh)
        knn.append(nxt)
        rate = kept[t] / k
        step = 1.0 - rate if sign < 0 else rate
        angle = rng.uniform(0, 2 * np.pi, size=m)
        pos.append(pos[-1] + step[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1))
    return knn, pos


def test_temporal_preserving_anti_proportional_movement_gives_minus_one(rng):
    k = 5
    kept = np.array([[0, 5, 1, 3], [4, 2, 1, 3], [2, 0, 5, 3], [5, 1, 0, 3]])  # last: constant
    knn, pos = constructed_history(kept, k, sign=-1, rng=rng)
    corr = temporal_correlations(
        np.stack([np.asarray(kept[t]) / k for t in range(4)]),
        np.stack([np.linalg.norm(pos[t + 1] - pos[t], axis=1) for t in range(4)]),
    )
    assert np.isnan(corr[3])  # a sample with a constant rate has no correlation: ignored
    np.testing.assert_allclose(corr[:3], -1.0)
    assert temporal_preserving(knn, pos) == pytest.approx(-1.0)
    knn, pos = constructed_history(kept, k, sign=+1, rng=rng)
    assert temporal_preserving(knn, pos) == pytest.approx(1.0)


def test_temporal_preserving_matches_brute_force(rng):
    reps = [rng.normal(size=(40, 6))]
    lows = [rng.normal(size=(40, 2))]
    for _ in range(4):  # drifting representations, so neighbour sets change partly
        reps.append(reps[-1] + 0.4 * rng.normal(size=(40, 6)))
        lows.append(lows[-1] + rng.normal(size=(40, 2)))
    expected = brute_temporal(reps, lows, K)
    # Rates and movements are kept as float32 across epochs: agreement to float32 precision.
    assert temporal_preserving(reps, lows, K) == pytest.approx(expected, abs=1e-6)
    knn = [knn_indices(r, K + 2) for r in reps]  # wider lists: the first K columns are used
    assert temporal_preserving(knn, lows, K) == pytest.approx(expected, abs=1e-6)


def test_temporal_preserving_needs_three_epochs(rng):
    reps = [rng.normal(size=(20, 3)) for _ in range(2)]
    lows = [rng.normal(size=(20, 2)) for _ in range(2)]
    assert math.isnan(temporal_preserving(reps, lows, K))
    with pytest.raises(ValueError):
        temporal_preserving(reps, lows[:1], K)


# ------------------------------------------------------------------ a run's exports


def write_exports(run_path: Path, vis: str, epochs=None, shared_model: bool = False) -> None:
    """Random-weight visualizers in the export format, projections = their encoder outputs.

    ``shared_model`` writes one ``vismodel/1.pth`` for every epoch, as TimeVis does.
    """
    run = TrainingRun(run_path)
    out = run_path / "visualize" / vis
    torch.manual_seed(0)
    dims = [run.shape.dim, 16, 2]
    model = Autoencoder(dims, dims[::-1]).eval()
    for epoch in epochs or run.epochs:
        if not shared_model:
            model = Autoencoder(dims, dims[::-1]).eval()
        if not shared_model or epoch == run.epochs[0]:
            atomic_torch_save(out / "vismodel" / f"{epoch}.pth", model.export_state())
        reps = torch.from_numpy(np.array(run.representations(epoch), dtype=np.float32))
        with torch.no_grad():
            atomic_save_npy(out / "projection" / f"{epoch}.npy", model.encoder(reps).numpy())


def check_ranges(results: dict, epochs: list[str], with_test: bool, with_head: bool) -> None:
    k = results["k"]
    assert list(results["epochs"]) == epochs
    for row in results["epochs"].values():
        assert set(row) == set(PER_EPOCH_KEYS)
        for key, value in row.items():
            applies = (with_test or not key.endswith("_test")) and (
                with_head or key.startswith("nn_")
            )
            if not applies:
                assert value is None, key
            elif key.startswith(("nn_", "bp_")):
                assert 0 <= value <= k, key
            else:
                assert 0 <= value <= 1, key
    json.dumps(results, allow_nan=False)  # JSON-serialisable, no NaN


def test_evaluate_visualization_dvi_matches_direct_computation(run_copy):
    write_exports(run_copy, "DVI")
    run = TrainingRun(run_copy)
    results = evaluate_visualization(run, "DVI", k=K)
    check_ranges(results, ["1", "2", "3"], with_test=True, with_head=True)
    assert results["vis"] == "DVI" and results["k"] == K
    assert results["n_train"] == run.train_points.size and results["n_test"] > 0
    assert -1 <= results["temporal_train"] <= 1 and -1 <= results["temporal_test"] <= 1

    # Epoch 2 recomputed here from the files, with the plain functions.
    epoch, out = 2, run_copy / "visualize" / "DVI"
    reps = np.asarray(run.representations(epoch), dtype=np.float32)
    proj = np.load(out / "projection" / f"{epoch}.npy")
    train, test = run.train_points, run.test_points
    union = np.concatenate([train, test])
    row = results["epochs"][str(epoch)]
    nn_train = neighbour_preserving(reps[train], proj[train], K).mean()
    assert row["nn_train"] == pytest.approx(nn_train)
    test_rows = np.arange(train.size, union.size)
    nn_test = neighbour_preserving_subset(reps[union], proj[union], test_rows, K).mean()
    assert row["nn_test"] == pytest.approx(nn_test)

    state = torch.load(out / "vismodel" / f"{epoch}.pth", weights_only=True)
    model = Autoencoder(state["encoder_dims"], state["decoder_dims"])
    model.load_state_dict(state["state_dict"])
    head = load_subject_head(run, epoch)
    x = torch.from_numpy(reps[test])
    with torch.no_grad():
        logits_x, logits_recon = head(x), head(model(x)[1])
    np.testing.assert_allclose(logits_x, run.predictions(epoch)[test], atol=1e-4)
    assert row["ppr_test"] == pytest.approx(prediction_preserving(logits_x, logits_recon))
    assert row["icd_test"] == pytest.approx(inverse_confidence_drop(logits_x, logits_recon))

    # Boundary preserving: the same boundary points, projected by the same encoder.
    knn = KNNGraph(knn_indices(reps[train], K), np.zeros((train.size, K), np.float32))
    boundary = boundary_points(reps[train], knn, head, round(0.1 * train.size), seed=0)
    with torch.no_grad():
        boundary_low = model.encoder(torch.from_numpy(boundary)).numpy()
    for part, rows in (("train", train), ("test", test)):
        expected = boundary_preserving(reps[rows], proj[rows], boundary, boundary_low, K)
        assert row[f"bp_{part}"] == pytest.approx(expected.mean(), abs=1e-6)

    table = format_table(results)
    assert "nn_train" in table and "mean" in table and "temporal" in table
    assert len(table.splitlines()) == 2 + 3 + 1 + 3 + 1  # header x2, epochs, rule, stats, temporal


def test_evaluate_visualization_shared_model_and_partial_exports(run_copy):
    write_exports(run_copy, "TimeVis", shared_model=True)
    write_exports(run_copy, "Partial", epochs=[1, 3])
    run = TrainingRun(run_copy)
    timevis = evaluate_visualization(run, "TimeVis", k=K)
    check_ranges(timevis, ["1", "2", "3"], with_test=True, with_head=True)
    partial = evaluate_visualization(run, "Partial", k=K)
    check_ranges(partial, ["1", "3"], with_test=True, with_head=True)
    assert partial["temporal_train"] is None  # two epochs: temporal preserving undefined
    assert "-" in format_table(partial)


def test_evaluate_visualization_without_test_samples_or_head(run_copy):
    write_exports(run_copy, "DVI")
    index = json.loads((run_copy / "index.json").read_text())
    (run_copy / "index.json").write_text(json.dumps({"train": index["train"]}))
    shutil.rmtree(run_copy / "dataset" / "prediction")  # no logits: not a classification run
    results = evaluate_visualization(TrainingRun(run_copy), "DVI", k=K)
    check_ranges(results, ["1", "2", "3"], with_test=False, with_head=False)
    assert results["n_test"] == 0 and results["temporal_test"] is None
    assert results["temporal_train"] is not None
    format_table(results)


def test_evaluate_visualization_errors(run_copy):
    run = TrainingRun(run_copy)
    with pytest.raises(ExportError, match="run train.py first"):
        evaluate_visualization(run, "DVI", k=K)
    write_exports(run_copy, "DVI")
    (run_copy / "visualize" / "DVI" / "vismodel" / "2.pth").unlink()
    with pytest.raises(ExportError, match="2.pth"):
        evaluate_visualization(run, "DVI", k=K)
    with pytest.raises(EvaluationError, match="k=0"):
        evaluate_visualization(run, "DVI", k=0)


# ------------------------------------------------------------------ evaluate.py


def run_evaluate(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "evaluate.py", *args, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT,
        env=train_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_evaluate_py_writes_metrics_json(demo_run, tmp_path):
    run_path = copy_run(demo_run, tmp_path / "run")
    write_exports(run_path, "DVI")
    proc = run_evaluate([f"content_path={run_path}", "vis=DVI", f"k={K}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_path / "visualize" / "DVI" / "metrics.json").read_text())
    check_ranges(metrics, ["1", "2", "3"], with_test=True, with_head=True)
    assert metrics["k"] == K
    assert "nn_train" in proc.stdout and "metrics.json" in proc.stdout


def test_evaluate_py_missing_exports_exit_2(demo_run, tmp_path):
    run_path = copy_run(demo_run, tmp_path / "run")
    write_exports(run_path, "DVI")
    proc = run_evaluate([f"content_path={run_path}", "vis=[DVI,TimeVis]"], tmp_path)
    assert proc.returncode == 2
    message = proc.stderr.strip().splitlines()
    assert len(message) == 1
    assert "no exports under" in message[0] and "TimeVis" in message[0]
    assert "run train.py first" in message[0]
    assert not (run_path / "visualize" / "DVI" / "metrics.json").exists()  # checked up front


# ------------------------------------------------------------------ benchmarks/umap_reference.py


@pytest.mark.slow
def test_umap_reference_prints_shares_and_test_prediction_references(demo_run, tmp_path):
    """The reference's visualizer columns are evaluate.py's figures (nn_train, ppr_test); the
    k-NN vote is a share; a run without test samples is refused before any UMAP fit."""
    run_path = copy_run(demo_run, tmp_path / "run")
    write_exports(run_path, "DVI")
    assert run_evaluate([f"content_path={run_path}", "vis=DVI", f"k={K}"], tmp_path).returncode == 0
    metrics = json.loads((run_path / "visualize" / "DVI" / "metrics.json").read_text())
    script = [sys.executable, "benchmarks/umap_reference.py", str(run_path), "DVI"]
    args = ["--k", str(K), "--epochs", "2", "3", "--predictions"]
    proc = subprocess.run(
        script + args, cwd=REPO_ROOT, env=train_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # epoch, UMAP's NP (fit seconds), DVI's NP (share of UMAP) | k-NN vote, DVI's test PP
    row = re.compile(
        r"^\s*(\d+)\s+([\d.]+) \(\s*[\d.]+s\)\s+([\d.]+) \(\s*\d+%\)\s+\|\s+([\d.]+)\s+([\d.]+)$"
    )
    found = {m[1]: m for m in map(row.match, proc.stdout.splitlines()) if m}
    assert sorted(found) == ["2", "3"], proc.stdout
    for epoch, m in found.items():
        assert float(m[3]) == pytest.approx(metrics["epochs"][epoch]["nn_train"], abs=5e-3)
        assert float(m[5]) == pytest.approx(metrics["epochs"][epoch]["ppr_test"], abs=6e-4)
        assert 0.0 <= float(m[4]) <= 1.0 and 0.0 < float(m[2]) <= K
    assert "DVI: lowest share of UMAP" in proc.stdout

    index = json.loads((run_path / "index.json").read_text())
    (run_path / "index.json").write_text(json.dumps({"train": index["train"]}))
    proc = subprocess.run(
        script + args, cwd=REPO_ROOT, env=train_env(tmp_path), capture_output=True, text=True
    )
    assert proc.returncode == 2 and "needs test samples" in proc.stderr
