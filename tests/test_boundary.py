"""Boundary points and the boundary complex (docs/design.md §4.2) against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttvis.boundary import (
    bisect_boundary,
    boundary_complex,
    boundary_gap,
    boundary_points,
    crossing_pairs,
    flip_segments,
    neighbour_crossing_pairs,
)
from ttvis.complex import neighbour_overlap
from ttvis.knn import exact_knn, query_knn
from ttvis.run import TrainingRun
from ttvis.subject import LinearHead, load_subject_head


def brute_gap(row: list[float]) -> float:
    s = sorted(row, reverse=True)
    return 0.0 if s[0] == s[-1] else (s[0] - s[1]) / (s[0] - s[-1])


def test_boundary_gap_matches_sorted_logits():
    logits = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    logits[3] = 2.0  # all equal: gap 0
    expected = [brute_gap(r) for r in logits.tolist()]
    np.testing.assert_allclose(boundary_gap(logits).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_boundary_gap_of_two_classes_is_the_probability_gap():
    logits = torch.randn(30, 2, generator=torch.Generator().manual_seed(1))
    p = torch.softmax(logits, 1)
    expected = (p[:, 0] - p[:, 1]).abs()
    np.testing.assert_allclose(boundary_gap(logits).numpy(), expected.numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def cloud() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(120, 5)).astype(np.float32)


def test_crossing_pairs_are_differently_predicted_neighbours(cloud):
    knn = exact_knn(cloud, 8)
    predictions = (cloud[:, 0] > 0).astype(np.int64)
    first, second = crossing_pairs(predictions, knn, 30, np.random.default_rng(0))
    assert first.shape == second.shape == (30,)
    assert (predictions[first] != predictions[second]).all()
    neigh = [set(r) for r in knn.indices.tolist()]
    assert all(b in neigh[a] or a in neigh[b] for a, b in zip(first, second, strict=True))
    unordered = {(min(a, b), max(a, b)) for a, b in zip(first, second, strict=True)}
    assert len(unordered) == 30, "a pair was drawn twice"


def test_crossing_pairs_fill_up_with_random_pairs(cloud):
    knn = exact_knn(cloud, 3)
    predictions = np.zeros(120, dtype=np.int64)
    predictions[:2] = 1  # almost no neighbour pair crosses classes
    first, second = crossing_pairs(predictions, knn, 40, np.random.default_rng(0))
    assert first.size == 40
    assert (predictions[first] != predictions[second]).all()
    same = crossing_pairs(np.zeros(120, np.int64), knn, 10, np.random.default_rng(0))
    assert same[0].size == 0, "one predicted class has no boundary"


def test_neighbour_crossing_pairs_match_brute_force(cloud):
    knn = exact_knn(cloud, 6)
    predictions = (cloud[:, 1] > 0.3).astype(np.int64) + (cloud[:, 2] > 1).astype(np.int64)
    expected = {
        (min(i, int(j)), max(i, int(j)))
        for i in range(cloud.shape[0])
        for j in knn.indices[i]
        if predictions[i] != predictions[j]
    }
    pairs = neighbour_crossing_pairs(predictions, knn)
    assert pairs.dtype == np.int64
    assert [tuple(p) for p in pairs.tolist()] == sorted(expected)


@pytest.mark.parametrize("batch_size", [16384, 7])  # all segments at once, or a few at a time
def test_flip_segments_locate_the_linear_boundary(cloud, batch_size):
    gen = torch.Generator().manual_seed(3)
    head = LinearHead(torch.randn(5, 2, generator=gen), torch.randn(2, generator=gen), 0.0)
    knn = exact_knn(cloud, 8)
    segments = flip_segments(cloud, knn, head, n_steps=16, batch_size=batch_size)
    x = torch.from_numpy(cloud)
    cls = head(x).argmax(1).numpy()
    expected = neighbour_crossing_pairs(cls, knn)
    assert len(segments) == expected.shape[0] > 0
    np.testing.assert_array_equal(segments.first, expected[:, 0])
    np.testing.assert_array_equal(segments.second, expected[:, 1])
    # Closed form: the logit difference is affine along the segment, zero at the flip.
    w, c = head.weight[:, 1] - head.weight[:, 0], head.bias[1] - head.bias[0]
    f1, f2 = x[segments.first] @ w + c, x[segments.second] @ w + c
    np.testing.assert_allclose(segments.flip, (-f2 / (f1 - f2)).numpy(), atol=2.0**-15)
    one_class = LinearHead(torch.zeros(5, 2), torch.tensor([1.0, 0.0]), 0.0)
    assert len(flip_segments(cloud, knn, one_class)) == 0


@pytest.mark.parametrize("n_classes", [2, 3])
def test_bisection_finds_the_linear_boundary(cloud, n_classes):
    # A third class far below the others never wins, so the flip is between classes 0 and 1.
    gen = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(5, n_classes, generator=gen), torch.randn(n_classes, generator=gen)
    if n_classes == 3:
        weight[:, 2], bias[2] = 0.0, -100.0
    head = LinearHead(weight, bias, 0.0)
    x = torch.from_numpy(cloud)
    cls = head(x).argmax(1)
    first = x[cls == 1][:20]
    second = x[cls == 0][:20]
    points = bisect_boundary(head, first, second, n_steps=16)
    # Closed form: the logit difference is affine along the segment, zero at l*.
    w = head.weight[:, 1] - head.weight[:, 0]
    c = head.bias[1] - head.bias[0]
    f1, f2 = first @ w + c, second @ w + c
    l_star = (-f2 / (f1 - f2))[:, None]
    expected = l_star * first + (1 - l_star) * second
    seg = (first - second).norm(dim=1)
    err = (points - expected).norm(dim=1) / seg
    assert err.max() <= 2.0**-16
    assert (boundary_gap(head(points)) < 1e-3).all()


def test_boundary_points_of_a_real_epoch_are_delta_boundary(demo_run):
    run = TrainingRun(demo_run)
    reps = run.train_representations(2)
    head = load_subject_head(run, 2)
    knn = exact_knn(reps, 10)
    points = boundary_points(reps, knn, head, n_points=60, delta=0.1, n_steps=12, seed=0)
    assert points.dtype == np.float32 and points.shape[1] == reps.shape[1]
    assert 0.8 * 60 <= points.shape[0] <= 60
    logits = head.predict(torch.from_numpy(points))
    assert (boundary_gap(logits) < 0.1).all()
    # They lie within the data's range, between samples, not far outside it.
    lo, hi = reps.min(0), reps.max(0)
    assert ((points >= lo - 1e-5) & (points <= hi + 1e-5)).all()


@pytest.mark.parametrize("exact_below", [10_000, 0])  # brute force, then pynndescent
def test_query_knn_matches_brute_force(cloud, exact_below):
    data, queries = cloud[:80], cloud[80:]
    d = np.sqrt(((queries[:, None, :] - data[None, :, :]).astype(np.float64) ** 2).sum(-1))
    idx = np.argsort(d, axis=1, kind="stable")[:, :7]
    knn = query_knn(data, queries, 7, exact_below=exact_below, chunk_rows=9, device="cpu")
    assert knn.indices.shape == (40, 7) and knn.indices.dtype == np.int64
    if exact_below:
        np.testing.assert_array_equal(knn.indices, idx)
        np.testing.assert_allclose(knn.dists, np.take_along_axis(d, idx, 1), rtol=1e-5)
    else:
        assert neighbour_overlap(knn.indices, idx).sum() / idx.size >= 0.95


def test_boundary_complex_joins_every_vertex_to_boundary_points(cloud):
    reps, boundary = cloud[:100], cloud[100:]
    edges = boundary_complex(reps, boundary, n_neighbors=6, n_epochs_per_sample=5)
    n, m = 100, 20
    assert edges.sigmas.shape == (n + m,)
    assert (edges.head < n + m).all() and (edges.tail < n + m).all()
    # Every edge has a boundary point (vertex >= n) at one end at least.
    assert ((edges.head >= n) | (edges.tail >= n)).all()
    assert (edges.weight > 0).all() and edges.weight.max() == pytest.approx(1.0)
    # Each training point's nearest boundary point is joined to it with full weight.
    nearest = query_knn(boundary, reps, 1).indices[:, 0] + n
    table = {
        (int(h), int(t)): float(w)
        for h, t, w in zip(edges.head, edges.tail, edges.weight, strict=True)
    }
    assert all((i, int(j)) in table for i, j in enumerate(nearest))


def test_dvi_batches_carry_points_at_the_real_decision_boundary(demo_run, caplog):
    from ttvis.datamodules import DVIDataModule

    run = TrainingRun(demo_run)
    head = load_subject_head(run, 2)
    dm = DVIDataModule(
        run,
        epoch=2,
        n_neighbors=5,
        batch_size=200,
        boundary_mix_fraction=0.5,
        boundary_mix_width=0.0,  # exactly at the flips
        subject_head=head,
    )
    dm.setup("fit")
    assert len(dm.segments) > 0
    batch = next(iter(dm.train_dataloader()))
    points = batch["boundary_x"]
    assert points.shape == (100, dm.train_reps.shape[1]) and points.dtype == torch.float32
    assert (boundary_gap(head.predict(points)) < 0.05).all()

    no_head = DVIDataModule(run, epoch=2, n_neighbors=5, boundary_mix_fraction=0.5)
    no_head.setup("fit")
    assert "no subject head" in caplog.text
    assert "boundary_x" not in next(iter(no_head.train_dataloader()))


def test_timevis_batches_carry_points_at_each_epochs_decision_boundary(demo_run, caplog):
    """TimeVis's segments join neighbours of one epoch that its subject predicts differently;
    each point drawn near a flip lies on that epoch's decision boundary and carries its epoch."""
    from ttvis.datamodules import TimeVisDataModule

    run = TrainingRun(demo_run)
    heads = [load_subject_head(run, e) for e in run.epochs]
    dm = TimeVisDataModule(
        run,
        n_neighbors=5,
        batch_size=400,
        boundary_mix_fraction=0.5,
        boundary_mix_width=0.0,  # exactly at the flips
        subject_heads=heads,
    )
    dm.setup("fit")
    epoch_pos = dm.layout.epoch_pos
    first, second = dm.segments.first, dm.segments.second
    assert (epoch_pos[first] == epoch_pos[second]).all()
    assert set(epoch_pos[first].tolist()) == set(range(len(run.epochs)))
    reps = dm.train_reps
    for t in range(len(run.epochs)):  # each epoch's segments cross its own head's boundary
        mine = epoch_pos[first] == t
        a = heads[t].predict(torch.as_tensor(reps[first[mine]])).argmax(1)
        b = heads[t].predict(torch.as_tensor(reps[second[mine]])).argmax(1)
        assert (a != b).all()
    batch = next(iter(dm.train_dataloader()))
    points, epochs = batch["boundary_x"], batch["boundary_epoch_pos"]
    assert points.shape == (200, reps.shape[1]) and epochs.shape == (200,)
    assert len(torch.unique(epochs)) > 1
    for t in torch.unique(epochs).tolist():
        assert (boundary_gap(heads[t].predict(points[epochs == t])) < 0.05).all()

    no_heads = TimeVisDataModule(run, n_neighbors=5, boundary_mix_fraction=0.5)
    no_heads.setup("fit")
    assert "no subject heads" in caplog.text
    assert "boundary_x" not in next(iter(no_heads.train_dataloader()))
    dim, n_classes = reps.shape[1], heads[0].predict(torch.as_tensor(reps[:1])).shape[1]
    one_class = LinearHead(torch.zeros(dim, n_classes), torch.eye(n_classes)[0], 0.0)
    no_flips = TimeVisDataModule(
        run, n_neighbors=5, boundary_mix_fraction=0.5, subject_heads=[one_class] * len(heads)
    )
    no_flips.setup("fit")
    assert len(no_flips.segments) == 0 and "no epoch's subject predicts" in caplog.text
    assert "boundary_x" not in next(iter(no_flips.train_dataloader()))


def test_dvi_complex_separates_the_heads_predicted_classes(demo_run):
    """With ``class_weight`` the DVI complex is the fuzzy set intersected with the subject
    head's predictions on the epoch's training points; without a head it stays unsupervised."""
    from ttvis.complex import fuzzy_complex, spatial_complex
    from ttvis.datamodules import DVIDataModule

    run = TrainingRun(demo_run)
    head = load_subject_head(run, 2)
    dm = DVIDataModule(run, epoch=2, n_neighbors=5, subject_head=head, class_weight=0.5)
    dm.build()
    reps = run.train_representations(2)
    classes = head.predict(torch.as_tensor(reps)).argmax(1).numpy()
    np.testing.assert_array_equal(dm.classes, classes)
    expected, _ = spatial_complex(reps, 5, dm.s_n_epochs, classes=classes, class_weight=0.5)
    np.testing.assert_array_equal(dm.edges.head, expected.head)
    np.testing.assert_allclose(dm.edges.weight, expected.weight)

    plain = fuzzy_complex(dm.knn, 0)[0].toarray()
    separated = fuzzy_complex(dm.knn, 0, classes=classes, class_weight=0.5)[0].toarray()
    across = (classes[:, None] != classes[None, :]) & (plain > 0)
    assert across.any() and separated[across].mean() < 0.2 * plain[across].mean()

    no_head = DVIDataModule(run, epoch=2, n_neighbors=5, class_weight=0.5)
    no_head.build()
    assert no_head.classes is None
