"""TimeVis: temporal edges against brute force, k-center coverage, an end-to-end run."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import copy_run, run_train

from ttvis.datamodules import TimeVisDataModule
from ttvis.modules import Autoencoder, EpochHeads, TimeVisModule
from ttvis.run import RunError, TrainingRun
from ttvis.temporal import (
    VertexLayout,
    data_scale,
    epoch_balance_factors,
    fuzzy_union,
    kcenter_greedy,
    kcenter_select_epochs,
    successor_anchors,
    temporal_knn,
)

# ------------------------------------------------------------------ brute force references


def brute_force_temporal_graph(
    run: TrainingRun,
    layout: VertexLayout,
    sigmas: np.ndarray,
    rhos: np.ndarray,
    k_t: int,
    t_n_epochs: float,
) -> np.ndarray:
    """Dense ``[V, V]`` temporal membership graph, built one vertex at a time."""
    v = layout.n_vertices
    reps = [run.train_representations(e).astype(np.float64) for e in run.epochs]
    where = {
        (int(t), int(i)): n
        for n, (t, i) in enumerate(zip(layout.epoch_pos, layout.point, strict=True))
    }
    directed = np.zeros((v, v))
    for n in range(v):
        t, i = int(layout.epoch_pos[n]), int(layout.point[n])
        candidates = []
        for u in range(layout.n_epochs):
            if u != t and (u, i) in where:
                candidates.append((np.linalg.norm(reps[t][i] - reps[u][i]), u, where[(u, i)]))
        candidates.sort(key=lambda c: (c[0], c[1]))
        for dist, _, m in candidates[:k_t]:
            gap = dist - rhos[n]
            directed[n, m] = 1.0 if gap <= 0 or sigmas[n] == 0 else math.exp(-gap / sigmas[n])
    union = directed + directed.T - directed * directed.T
    if union.max() > 0:
        union[union < union.max() / t_n_epochs] = 0.0
    return union


def dense(edges, v: int) -> np.ndarray:
    out = np.zeros((v, v))
    out[edges.head, edges.tail] = edges.weight
    return out


@pytest.fixture(scope="module")
def tiny_run(demo_run) -> TrainingRun:
    return TrainingRun(demo_run)


@pytest.mark.parametrize("k_t", [1, 2])
def test_temporal_edges_match_brute_force(tiny_run, k_t):
    dm = TimeVisDataModule(tiny_run, n_neighbors=5, t_n_neighbors=k_t, t_n_epochs=5)
    dm.build()
    layout = dm.layout
    assert layout.n_epochs == 3
    assert layout.n_vertices == 3 * tiny_run.train_points.size
    expected = brute_force_temporal_graph(
        tiny_run, layout, dm.spatial.sigmas, dm.spatial.rhos, k_t, t_n_epochs=5
    )
    got = dense(dm.temporal, layout.n_vertices)
    # edges_from_graph normalises p = w / max(w).
    np.testing.assert_allclose(got, expected / expected.max(), rtol=1e-5, atol=1e-6)
    # Temporal edges only ever join copies of the same sample in different epochs.
    assert (layout.point[dm.temporal.head] == layout.point[dm.temporal.tail]).all()
    assert (layout.epoch_pos[dm.temporal.head] != layout.epoch_pos[dm.temporal.tail]).all()
    # Spatial edges stay inside one epoch.
    assert (layout.epoch_pos[dm.spatial.head] == layout.epoch_pos[dm.spatial.tail]).all()


def test_combined_draws_follow_s_and_t_n_epochs(tiny_run):
    dm = TimeVisDataModule(tiny_run, n_neighbors=5, s_n_epochs=3, t_n_epochs=2)
    dm.build()
    expected = 3 * dm.spatial.weight.sum(dtype=np.float64) + 2 * dm.temporal.weight.sum(
        dtype=np.float64
    )
    assert dm.n_edges == math.floor(expected)
    n_s = len(dm.spatial)
    share = dm.edges.weight[:n_s].sum(dtype=np.float64) / dm.edges.weight.sum(dtype=np.float64)
    assert share == pytest.approx(3 * dm.spatial.weight.sum() / expected, rel=1e-5)


def test_epoch_balance_factors_keep_the_total():
    scales, weights = np.array([0.5, 1.0, 2.0]), np.array([10.0, 30.0, 20.0])
    f = epoch_balance_factors(scales, weights, 1.0)
    # f_t proportional to 1 / scale_t, and sum_t f_t w_t == sum_t w_t.
    np.testing.assert_allclose(f * scales, np.full(3, f[0] * scales[0]))
    assert (f * weights).sum() == pytest.approx(weights.sum())
    np.testing.assert_allclose(epoch_balance_factors(scales, weights, 0.0), np.ones(3))


def test_epoch_balance_draws_compact_epochs_more(tiny_run):
    plain = TimeVisDataModule(tiny_run, n_neighbors=5)
    balanced = TimeVisDataModule(tiny_run, n_neighbors=5, epoch_balance=2.0)
    plain.build()
    balanced.build()
    pos = plain.layout.epoch_pos[plain.spatial.head]
    sums = [
        np.bincount(pos, weights=dm.spatial.weight.astype(np.float64), minlength=3)
        for dm in (plain, balanced)
    ]
    scales = np.array([data_scale(tiny_run.train_representations(e)) for e in tiny_run.epochs])
    ratio = sums[1] / sums[0]
    np.testing.assert_allclose(ratio * scales**2, np.full(3, ratio[0] * scales[0] ** 2), rtol=1e-5)
    assert sums[1].sum() == pytest.approx(sums[0].sum(), rel=1e-5)
    assert abs(balanced.n_edges - plain.n_edges) <= 1


def test_temporal_knn_with_missing_copies():
    rng = np.random.default_rng(0)
    n_points, n_epochs = 40, 4
    selections = [np.sort(rng.choice(n_points, 25, replace=False)) for _ in range(n_epochs)]
    layout = VertexLayout.from_selections(selections, n_points)
    x = rng.normal(size=(layout.n_vertices, 6)).astype(np.float32)
    idx, dist = temporal_knn(x, layout, 2)
    for n in range(layout.n_vertices):
        t, i = layout.epoch_pos[n], layout.point[n]
        others = [
            (float(np.linalg.norm(x[n] - x[m])), m)
            for m in range(layout.n_vertices)
            if layout.point[m] == i and layout.epoch_pos[m] != t
        ]
        others.sort()
        want = [m for _, m in others[:2]] + [-1] * (2 - min(2, len(others)))
        assert list(idx[n]) == want
        np.testing.assert_allclose(dist[n][: len(others[:2])], [d for d, _ in others[:2]], 1e-5)


@pytest.mark.parametrize("power", [1.0, 16.0])
def test_successor_anchors_match_brute_force(power):
    rng = np.random.default_rng(1)
    n_points, n_epochs, k = 30, 4, 5
    selections = [np.sort(rng.choice(n_points, 20, replace=False)) for _ in range(n_epochs)]
    layout = VertexLayout.from_selections(selections, n_points)
    knn_points = np.stack(
        [rng.choice(n_points, k, replace=False) for _ in range(layout.n_vertices)]
    )
    anchor, weight = successor_anchors(layout, knn_points, power)
    for n in range(layout.n_vertices):
        t, i = layout.epoch_pos[n], layout.point[n]
        later = [
            m for m in range(layout.n_vertices) if layout.point[m] == i and layout.epoch_pos[m] > t
        ]
        if not later:
            assert anchor[n] == -1 and weight[n] == 0
            continue
        m = min(later, key=lambda m: layout.epoch_pos[m])  # the next epoch that has point i
        assert anchor[n] == m
        kept = len(set(knn_points[n]) & set(knn_points[m])) / k
        assert weight[n] == pytest.approx(kept**power, rel=1e-5)
    assert (anchor >= 0).any() and (anchor == -1).any()


def test_timevis_anchors_join_each_sample_to_its_next_epoch(tiny_run):
    from ttvis.knn import nearest_neighbours

    dm = TimeVisDataModule(tiny_run, n_neighbors=5, anchors=True, anchor_power=2.0)
    dm.build()
    n = tiny_run.train_points.size
    expected_anchor = np.r_[np.arange(n, 3 * n), np.full(n, -1)]
    np.testing.assert_array_equal(dm.anchor_vertices(), expected_anchor)
    knn = [
        nearest_neighbours(tiny_run.train_representations(e), 5).indices for e in tiny_run.epochs
    ]
    kept = [
        np.array([len(set(a) & set(b)) / 5 for a, b in zip(knn[t], knn[t + 1], strict=True)])
        for t in range(2)
    ]
    expected_weight = np.r_[kept[0] ** 2, kept[1] ** 2, np.zeros(n)]
    _, _, _, vertex_data = dm.stream_spec()
    np.testing.assert_allclose(vertex_data["anchor_weight"].numpy(), expected_weight, rtol=1e-6)
    assert 0 < expected_weight[:n].mean() < 1
    # Anchors lighter than anchor_min_weight are dropped: no anchor vertex, weight 0.
    floor = float(np.median(expected_weight[: 2 * n]))
    light = TimeVisDataModule(
        tiny_run, n_neighbors=5, anchors=True, anchor_power=2.0, anchor_min_weight=floor
    )
    light.build()
    dropped = expected_weight < floor
    assert 0 < dropped[: 2 * n].sum() < 2 * n
    np.testing.assert_array_equal(light.anchor_vertices(), np.where(dropped, -1, expected_anchor))
    np.testing.assert_allclose(
        light.stream_spec()[3]["anchor_weight"].numpy(),
        np.where(dropped, 0.0, expected_weight),
        rtol=1e-6,
    )
    plain = TimeVisDataModule(tiny_run, n_neighbors=5)
    plain.build()
    assert plain.anchor_vertices() is None
    assert "anchor_weight" not in plain.stream_spec()[3]


def test_fuzzy_union_is_symmetric():
    import scipy.sparse

    a = scipy.sparse.coo_matrix(np.array([[0, 0.5, 0], [0.2, 0, 0], [0, 1.0, 0]]))
    u = fuzzy_union(a).toarray()
    np.testing.assert_allclose(u, u.T)
    assert u[0, 1] == pytest.approx(0.5 + 0.2 - 0.1)
    assert u[1, 2] == pytest.approx(1.0)


# ------------------------------------------------------------------ k-center


@pytest.mark.parametrize("budget", [1, 7, 50])
def test_kcenter_covers_the_data(budget):
    x = np.random.default_rng(budget).normal(size=(300, 5)).astype(np.float32)
    selected, radius = kcenter_greedy(x, budget=budget)
    assert selected.size == budget and np.unique(selected).size == budget
    d = np.linalg.norm(x[:, None, :] - x[selected][None, :, :], axis=2).min(1)
    assert d.max() <= radius + 1e-5
    assert d.max() == pytest.approx(radius, rel=1e-5)


def test_kcenter_stops_at_radius():
    x = np.random.default_rng(1).normal(size=(200, 3))
    selected, radius = kcenter_greedy(x, radius=1.0)
    assert radius <= 1.0
    d = np.linalg.norm(x[:, None, :] - x[selected][None, :, :], axis=2).min(1)
    assert d.max() <= radius + 1e-6


def test_kcenter_epochs_cover_each_epoch_to_the_same_relative_radius(tiny_run):
    epochs = tiny_run.epochs
    results = kcenter_select_epochs(
        lambda t: tiny_run.train_representations(epochs[t]), len(epochs), 0.2, min_points=6
    )
    target = results[-1].relative_radius
    n = tiny_run.train_points.size
    assert results[-1].selected.size == math.ceil(0.2 * n)
    for t, r in enumerate(results):
        x = tiny_run.train_representations(epochs[t])
        d = np.linalg.norm(x[:, None, :] - x[r.selected][None, :, :], axis=2).min(1)
        assert d.max() <= r.radius + 1e-4  # every point within the reported radius
        assert r.relative_radius <= target + 1e-6 or r.selected.size == n


@pytest.mark.parametrize("gather_all", [None, False, True, "linear heads"])
def test_epoch_heads_apply_each_rows_own_head(gather_all):
    """Grouped by epoch (the CPU's way), every head on every row (an accelerator's: no host
    synchronisation) or, for linear heads, one stacked product: each row gets its own epoch's
    logits, gradients included."""
    from ttvis.subject import LinearHead

    gen = torch.Generator().manual_seed(0)
    if gather_all == "linear heads":
        layers = [
            LinearHead(torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen), 0.0)
            for _ in range(3)
        ]
        weights = [h.weight.T for h in layers]  # [C, D], as torch.nn.Linear holds them
    else:
        layers = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
        weights = [h.weight for h in layers]
    heads = EpochHeads(layers, logit_scales=[1.0, 2.0, 4.0])
    assert heads.stacked == (gather_all == "linear heads")
    heads.gather_all = None if gather_all == "linear heads" else gather_all
    x = torch.randn(6, 4, requires_grad=True)
    heads.rows = torch.tensor([0, 1, 1, 0, 1, 0])  # epoch 2 absent from the batch
    out = heads(x)
    for row, t in enumerate(heads.rows.tolist()):
        want = heads.heads[t](x[row : row + 1])[0] / (1.0, 2.0, 4.0)[t]
        torch.testing.assert_close(out[row], want)
    out.sum().backward()
    expected = torch.stack([weights[t].sum(0) / (1.0, 2.0, 4.0)[t] for t in heads.rows])
    torch.testing.assert_close(x.grad, expected)


def test_demo_runs_model_heads_are_stacked_with_their_own_logits(demo_run):
    """The demo classifier's ``prediction`` is one nn.Linear: TimeVis applies every epoch's as
    one stacked product, and each row still gets its own epoch's model head's logits."""
    from conftest import CONF_DIR
    from hydra import compose, initialize_config_dir

    from ttvis.subject import load_subject_head
    from ttvis.training import epoch_heads

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["method=timevis", f"content_path={demo_run}"])
    run = TrainingRun(demo_run)
    heads = epoch_heads(cfg, run)
    assert heads.stacked
    x = torch.randn(len(run.epochs) * 4, run.shape.dim) * 3
    heads.rows = torch.arange(len(run.epochs)).repeat_interleave(4)
    out = heads(x)
    for t, epoch in enumerate(run.epochs):
        want = load_subject_head(run, epoch).predict(x[4 * t : 4 * t + 4]) / heads.logit_scales[t]
        torch.testing.assert_close(out[4 * t : 4 * t + 4], want, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ end to end


def check_timevis_export(content_path: Path, resolution: int) -> None:
    from matplotlib import image as mpl_image

    run = TrainingRun(content_path)
    vis = content_path / "visualize" / "TimeVis"
    npy = sorted(f"{e}.npy" for e in run.epochs)
    assert sorted(p.name for p in (vis / "projection").iterdir()) == npy
    assert sorted(p.name for p in (vis / "scale").iterdir()) == npy
    assert sorted(p.name for p in (vis / "bgimg").iterdir()) == sorted(
        f"{e}.png" for e in run.epochs
    )
    pth = sorted(f"{e}.pth" for e in run.epochs)
    assert sorted(p.name for p in (vis / "vismodel").iterdir()) == pth
    models = {e: torch.load(vis / "vismodel" / f"{e}.pth", weights_only=True) for e in run.epochs}
    first = models[run.epochs[0]]["state_dict"]
    for epoch in run.epochs:
        saved = models[epoch]
        assert set(saved) >= {"state_dict", "encoder_dims", "decoder_dims"}
        # One visualizer: the epochs' models differ only where each epoch's own input
        # normalisation and biases are folded in (the first encoder layer, the first decoder
        # layer's bias and the last decoder layer).
        for name, value in saved["state_dict"].items():
            if not name.startswith(
                ("encoder.0.", "decoder.0.bias", f"decoder.{2 * (len(saved['decoder_dims']) - 2)}.")
            ):
                torch.testing.assert_close(value, first[name])
        net = Autoencoder(saved["encoder_dims"], saved["decoder_dims"])
        net.load_state_dict(saved["state_dict"])
        proj = np.load(vis / "projection" / f"{epoch}.npy")
        assert proj.dtype == np.float32 and proj.shape == (run.shape.n_points, 2)
        assert np.isfinite(proj).all() and proj.std(0).min() > 0
        scale = np.load(vis / "scale" / f"{epoch}.npy")
        x_min, y_min, x_max, y_max = scale
        assert x_min < x_max and y_min < y_max
        assert (proj >= [x_min, y_min]).all() and (proj <= [x_max, y_max]).all()
        assert mpl_image.imread(vis / "bgimg" / f"{epoch}.png").shape[:2] == (
            resolution,
            resolution,
        )
        # Every sample of every epoch, train and test, comes from the one saved model.
        reps = torch.from_numpy(np.array(run.representations(epoch), dtype=np.float32))
        with torch.no_grad():
            np.testing.assert_allclose(net.encoder(reps).numpy(), proj, rtol=1e-4, atol=1e-4)
    leftovers = [p for p in vis.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers


def test_timevis_negatives_are_drawn_within_the_epoch_window():
    """With ``negatives_epoch_window`` each edge's negatives are tails of epochs within the
    window of its head's (the batch's vertex rows come first in ``rows``); without it the UMAP
    loss draws them itself."""
    rows = torch.tensor([0, 1, 1, 2, 3, 0, 2])  # 6 vertex rows, then an interpolated point's
    head_pos, tail_pos = torch.tensor([0, 2, 4, 3, 5]), torch.tensor([5, 1, 3, 4, 0])
    dims = ([3, 8, 2], [2, 8, 3], partial(torch.optim.Adam))
    for window in (0, 1):
        module = TimeVisModule(*dims, negative_sample_rate=7, negatives_epoch_window=window)
        module._generator = torch.Generator().manual_seed(0)
        drawn = module.draw_negatives(rows, head_pos, tail_pos)
        assert drawn.shape == (5 * 7,)
        head_epoch, tail_epoch = rows[head_pos].repeat(7), rows[tail_pos][drawn]
        assert ((tail_epoch - head_epoch).abs() <= window).all()
        assert module.draw_negatives(None, head_pos, tail_pos) is None
    assert TimeVisModule(*dims).draw_negatives(rows, head_pos, tail_pos) is None
    with pytest.raises(ValueError, match="negatives_epoch_window=-1"):
        TimeVisModule(*dims, negatives_epoch_window=-1)


@pytest.mark.slow
@pytest.mark.parametrize(("sampling", "window"), [("none", "null"), ("kcenter", 1)])
def test_train_timevis_end_to_end(demo_run, tmp_path, sampling, window):
    content = copy_run(demo_run, tmp_path / "run")
    proc = run_train(
        [
            "method=timevis",
            f"content_path={content}",
            f"method.sampling={sampling}",
            f"method.negatives_epoch_window={window}",
            "method.kcenter.fraction=0.5",
            "method.max_epochs=1",
            "method.recon_rows=16",  # fewer than a batch's vertices: each epoch's head on its own
        ],
        tmp_path,
    )
    check_timevis_export(content, resolution=40)
    assert not (content / "visualize" / "DVI").exists()
    if sampling == "kcenter":
        assert "k-center kept" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_train_timevis_two_processes(demo_run, tmp_path):
    content = copy_run(demo_run, tmp_path / "run")
    proc = run_train(
        [
            "method=timevis",
            f"content_path={content}",
            "method.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.strategy=ddp",
        ],
        tmp_path,
    )
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr
    check_timevis_export(content, resolution=40)


def test_side_by_side_table_has_a_row_per_epoch_and_metric():
    from ttvis.metrics_report import format_comparison

    def results(name, base):
        return {
            "vis": name,
            "k": 15,
            "n_train": 10,
            "n_test": 0,
            "epochs": {
                str(e): {"nn_train": base + e, "ppr_train": 0.9, "nn_test": None} for e in (1, 2)
            },
            "temporal_train": -0.5,
            "temporal_test": None,
        }

    table = format_comparison([results("DVI", 1.0), results("TimeVis", 3.0)])
    lines = table.splitlines()
    assert "DVI" in lines[1] and "TimeVis" in lines[1]
    rows = [line.split() for line in lines[2:] if line[:1].isdigit()]
    assert [r[:2] for r in rows] == [
        ["1", "nn_train"],
        ["1", "ppr_train"],
        ["2", "nn_train"],
        ["2", "ppr_train"],
    ]
    assert rows[0][2:] == ["2.000", "4.000"]
    assert any(line.split()[:4] == ["mean", "nn_train", "2.500", "4.500"] for line in lines)
    assert any(line.split()[:2] == ["all", "temporal_train"] for line in lines)


def test_each_epoch_is_normalised_on_its_own_unless_shared(tiny_run):
    run = tiny_run
    per_epoch = TimeVisDataModule(tiny_run, n_neighbors=5)
    shift, scale = per_epoch.input_normalisation()
    assert shift.shape == (len(run.epochs), run.shape.dim) and scale.shape == (len(run.epochs),)
    for t, epoch in enumerate(run.epochs):
        reps = run.train_representations(epoch).astype(np.float64)
        np.testing.assert_allclose(shift[t].numpy(), reps.mean(0), rtol=1e-5, atol=1e-6)
        assert float(scale[t]) == pytest.approx(np.sqrt(reps.var(0).mean()), rel=1e-5)
    shared = TimeVisDataModule(tiny_run, n_neighbors=5, normalisation="shared")
    shift, scale = shared.input_normalisation()
    every = np.concatenate([run.train_representations(e) for e in run.epochs]).astype(np.float64)
    assert shift.shape == (run.shape.dim,)
    assert scale == pytest.approx(np.sqrt(every.var(0).mean()), rel=1e-5)
    with pytest.raises(RunError, match="method.normalisation='none'"):
        TimeVisDataModule(tiny_run, n_neighbors=5, normalisation="none")
