"""Edge streaming, the visualizer losses and the autoencoder layout, against brute force."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from ttvis.boundary import FlipSegments
from ttvis.complex import EdgeSet
from ttvis.datamodules import EdgeStream
from ttvis.modules import Autoencoder
from ttvis.modules.autoencoder import mlp
from ttvis.modules.losses import (
    negatives_in_group,
    reconstruction_loss,
    temporal_loss,
    umap_ab,
    umap_loss,
)
from ttvis.modules.visualizer import interpolate_edges

# A hand-made complex on 6 vertices; vertex v's feature row is [v, 10 v] so rows name vertices.
HEAD = np.array([0, 1, 1, 2, 3, 4, 5, 0], dtype=np.int64)
TAIL = np.array([1, 0, 2, 1, 4, 3, 0, 5], dtype=np.int64)
WEIGHT = np.array([1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125], dtype=np.float32)


def _edge_set() -> EdgeSet:
    return EdgeSet(HEAD, TAIL, WEIGHT, np.ones(6, np.float32), np.zeros(6, np.float32))


def _reps() -> torch.Tensor:
    v = torch.arange(6, dtype=torch.float32)
    return torch.stack([v, 10 * v], 1)


def _drawn_edges(stream: EdgeStream) -> list[tuple[int, int]]:
    """Decode every batch of one pass back into (head, tail) vertex pairs."""
    out = []
    for batch in stream:
        x = batch["x"]
        assert torch.equal(x[:, 1], 10 * x[:, 0])  # rows are genuine vertex rows
        assert x[:, 0].unique().numel() == x.shape[0], "vertices are not distinct"
        assert batch["vertex"].tolist() == x[:, 0].long().tolist()  # each row's vertex
        heads = x[batch["head_pos"], 0].long().tolist()
        tails = x[batch["tail_pos"], 0].long().tolist()
        # counts: how often each distinct vertex occurs among the batch's 2B edge ends.
        ends = Counter(heads + tails)
        assert batch["counts"].tolist() == [ends[int(v)] for v in x[:, 0].tolist()]
        out += list(zip(heads, tails, strict=True))
    return out


def test_edge_stream_frequency_follows_weight():
    n_edges = 16000
    stream = EdgeStream(_reps(), _edge_set(), n_edges=n_edges, batch_size=700, seed=3)
    drawn = _drawn_edges(stream)
    assert len(drawn) == n_edges
    valid = set(zip(HEAD.tolist(), TAIL.tolist(), strict=True))
    assert set(drawn) <= valid, "a drawn pair is not an edge of the complex"
    counts = Counter(drawn)
    observed = np.array([counts[(h, t)] for h, t in zip(HEAD, TAIL, strict=True)])
    w = WEIGHT.astype(np.float64)
    expected = n_edges * w / w.sum()
    chi2 = stats.chisquare(observed, expected)
    assert chi2.pvalue > 1e-3, (observed, expected.round())
    assert np.abs(observed / expected - 1).max() < 0.15


def test_edge_stream_length_and_batches():
    stream = EdgeStream(_reps(), _edge_set(), n_edges=2500, batch_size=1000, seed=0)
    batches = list(stream)
    assert len(stream) == len(batches) == 3
    assert [b["head_pos"].numel() for b in batches] == [1000, 1000, 500]
    assert all(b["tail_pos"].numel() == b["head_pos"].numel() for b in batches)
    # A second pass is the next visualizer epoch: new draws, same sizes.
    again = list(stream)
    assert len(again) == 3
    assert not all(
        torch.equal(a["head_pos"], b["head_pos"]) for a, b in zip(batches, again, strict=True)
    )


def test_edge_stream_ranks_draw_their_own_half():
    n_edges = 3001
    ranks = [
        EdgeStream(_reps(), _edge_set(), n_edges, 500, seed=7, rank=r, world_size=2) for r in (0, 1)
    ]
    drawn = [_drawn_edges(s) for s in ranks]
    for d in drawn:
        assert len(d) == math.ceil(n_edges / 2)
    assert drawn[0] != drawn[1], "both ranks drew the same edges"
    assert len(ranks[0]) == len(ranks[1]) == math.ceil(math.ceil(n_edges / 2) / 500)
    # Same seed and rank: reproducible.
    again = EdgeStream(_reps(), _edge_set(), n_edges, 500, seed=7, rank=0, world_size=2)
    assert _drawn_edges(again) == drawn[0]


def test_edge_stream_without_dedup_draws_the_same_edges_one_row_per_end():
    deduped = EdgeStream(_reps(), _edge_set(), n_edges=2500, batch_size=700, seed=5)
    plain = EdgeStream(_reps(), _edge_set(), n_edges=2500, batch_size=700, seed=5, dedup=False)
    assert deduped.dedup and not plain.dedup  # None means: on CPU, dedup
    pairs = []
    for batch in plain:
        x, size = batch["x"], batch["head_pos"].numel()
        assert x.shape[0] == 2 * size and batch["counts"].tolist() == [1] * (2 * size)
        assert batch["vertex"].tolist() == x[:, 0].long().tolist()
        heads = x[batch["head_pos"], 0].long().tolist()
        tails = x[batch["tail_pos"], 0].long().tolist()
        pairs += list(zip(heads, tails, strict=True))
    assert pairs == _drawn_edges(deduped)


def test_edge_stream_rejects_empty_complex():
    empty = EdgeSet(*(np.zeros(0, t) for t in (np.int64, np.int64, np.float32)),
                    np.ones(6, np.float32), np.zeros(6, np.float32))  # fmt: skip
    with pytest.raises(ValueError, match="no edges"):
        EdgeStream(_reps(), empty, n_edges=10, batch_size=4)


def _q(d2: float, a: float, b: float) -> float:
    return 1.0 / (1.0 + a * max(d2, 1e-12) ** b)


@pytest.mark.parametrize(("m", "repulsion"), [(3, 1.0), (5, 0.5)])
def test_umap_loss_matches_brute_force(m, repulsion):
    a, b = umap_ab(1.0, 0.1)
    assert 1.0 < a < 2.5 and 0.7 < b < 1.0  # umap-learn's curve for min_dist 0.1
    gen = torch.Generator().manual_seed(0)
    emb_from = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    emb_to = torch.randn(9, 2, generator=gen, dtype=torch.float64)
    emb_to[0] = emb_from[0]  # a zero-distance edge
    loss = umap_loss(
        emb_from, emb_to, a, b, negative_sample_rate=m, repulsion_strength=repulsion,
        generator=torch.Generator().manual_seed(42),
    )  # fmt: skip
    # The same negatives: tails drawn uniformly from the batch by the same generator state.
    neg = torch.randint(0, 9, (9 * m,), generator=torch.Generator().manual_seed(42)).tolist()
    eps = 1e-4
    terms = []
    for i in range(9):
        d2 = float(((emb_from[i] - emb_to[i]) ** 2).sum())
        terms.append(-math.log(min(max(_q(d2, a, b), eps), 1.0)))
    for k, j in enumerate(neg):
        d2 = float(((emb_from[k % 9] - emb_to[j]) ** 2).sum())
        terms.append(-math.log(min(max(1.0 - _q(d2, a, b), eps), 1.0)) * repulsion)
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_umap_loss_skips_drawn_tails_that_are_not_negatives():
    """A drawn tail that is the head's own vertex or its edge's tail is no negative: its
    repulsion is left out of the sum (the mean still counts it), as a loop over pairs does."""
    a, b = umap_ab(1.0, 0.1)
    m, n = 4, 10
    gen = torch.Generator().manual_seed(3)
    vertex_pos = torch.randn(6, 2, generator=gen, dtype=torch.float64)
    head = torch.randint(0, 6, (n,), generator=gen)
    tail = (head + torch.randint(1, 6, (n,), generator=gen)) % 6
    loss = umap_loss(
        vertex_pos[head], vertex_pos[tail], a, b, negative_sample_rate=m,
        generator=torch.Generator().manual_seed(7), head_vertex=head, tail_vertex=tail,
    )  # fmt: skip
    neg = torch.randint(0, n, (n * m,), generator=torch.Generator().manual_seed(7)).tolist()
    eps, terms, skipped = 1e-4, [], 0
    for i in range(n):
        d2 = float(((vertex_pos[head[i]] - vertex_pos[tail[i]]) ** 2).sum())
        terms.append(-math.log(min(max(_q(d2, a, b), eps), 1.0)))
    for k, j in enumerate(neg):
        i = k % n
        if int(tail[j]) in (int(head[i]), int(tail[i])):
            terms.append(0.0)
            skipped += 1
            continue
        d2 = float(((vertex_pos[head[i]] - vertex_pos[tail[j]]) ** 2).sum())
        terms.append(-math.log(min(max(1.0 - _q(d2, a, b), eps), 1.0)))
    assert skipped > 0  # the check below covers both kinds of draw
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    # Every edge into one vertex: every drawn tail is the edge's own, and nothing repels.
    same_tail = torch.zeros(n, dtype=torch.long)
    attraction = umap_loss(
        vertex_pos[head], vertex_pos[same_tail], a, b, negative_sample_rate=0,
    )  # fmt: skip
    only = umap_loss(
        vertex_pos[head], vertex_pos[same_tail], a, b, negative_sample_rate=m,
        head_vertex=head, tail_vertex=same_tail,
    )  # fmt: skip
    assert float(only) == pytest.approx(float(attraction) / (1 + m), rel=1e-9)


@pytest.mark.parametrize("window", [0, 1])
def test_negatives_in_group_draw_uniformly_within_the_window(window):
    """Every draw is a tail whose group is within ``window`` of the head's, each such tail
    about equally often; a head with no such tail in the batch draws from all of them; draw k
    is edge k % B's."""
    m, draws = 3, 20_000
    head_group = torch.tensor([0, 0, 1, 3, 3, 5, 1, 0])  # group 5 has no tail within 1
    tail_group = torch.tensor([0, 1, 1, 3, 0, 3, 2, 0])
    gen = torch.Generator().manual_seed(5)
    picks = torch.stack(
        [negatives_in_group(head_group, tail_group, m, gen, window) for _ in range(draws)]
    )
    assert picks.shape == (draws, 8 * m)
    for k in range(8 * m):
        group = int(head_group[k % 8])
        eligible = [j for j in range(8) if abs(int(tail_group[j]) - group) <= window]
        eligible = eligible or list(range(8))
        seen = Counter(picks[:, k].tolist())
        assert set(seen) == set(eligible), (k, seen)
        expected = draws / len(eligible)
        assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in seen.values()), seen


def test_umap_loss_repels_the_negatives_it_is_given():
    """Given drawn tails (here :func:`negatives_in_group`'s), the loss is the same sum over
    pairs with those as the negatives."""
    a, b = umap_ab(1.0, 0.1)
    m, n = 4, 12
    gen = torch.Generator().manual_seed(11)
    emb_from = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    emb_to = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    group = torch.randint(0, 5, (n,), generator=gen)
    drawn = negatives_in_group(group, group, m, torch.Generator().manual_seed(2), 1)
    loss = umap_loss(emb_from, emb_to, a, b, negative_sample_rate=m, negatives=drawn)
    neg = drawn.tolist()
    assert all(abs(int(group[j]) - int(group[k % n])) <= 1 for k, j in enumerate(neg))
    eps, terms = 1e-4, []
    for i in range(n):
        d2 = float(((emb_from[i] - emb_to[i]) ** 2).sum())
        terms.append(-math.log(min(max(_q(d2, a, b), eps), 1.0)))
    for k, j in enumerate(neg):
        d2 = float(((emb_from[k % n] - emb_to[j]) ** 2).sum())
        terms.append(-math.log(min(max(1.0 - _q(d2, a, b), eps), 1.0)))
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)


def test_umap_loss_attraction_only_and_gradients():
    a, b = umap_ab()
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    y = torch.tensor([[0.0, 1.0], [3.0, 4.0]])
    loss = umap_loss(x, y, a, b, negative_sample_rate=0)
    expected = (-math.log(_q(1.0, a, b)) - math.log(_q(0.0, a, b))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(x.grad).all()  # finite even at distance 0
    assert x.grad[0, 1] < 0  # pulls the first head towards its tail (up)


def test_reconstruction_loss_with_counts_equals_mean_over_repeated_rows():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, generator=gen)
    x_hat = torch.randn(5, 4, generator=gen)
    counts = torch.tensor([1, 3, 2, 1, 4])
    weighted = reconstruction_loss(x, x_hat, counts)
    rep_x = x.repeat_interleave(counts, 0)
    rep_hat = x_hat.repeat_interleave(counts, 0)
    assert float(weighted) == pytest.approx(float(((rep_x - rep_hat) ** 2).mean()), rel=1e-6)
    assert float(reconstruction_loss(x, x_hat)) == pytest.approx(
        float(((x - x_hat) ** 2).mean()), rel=1e-6
    )
    assert float(weighted) != pytest.approx(float(reconstruction_loss(x, x_hat)), rel=1e-3)


def test_temporal_loss_matches_brute_force():
    net = Autoencoder([4, 3, 2], [2, 3, 4])
    anchors = [p.detach().clone() for p in net.parameters()]
    assert temporal_loss(list(net.parameters()), anchors).item() == 0.0
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.add_(0.1 * (i + 1) * torch.arange(p.numel(), dtype=p.dtype).reshape(p.shape))
    expected = 0.0
    for p, p0 in zip(net.parameters(), anchors, strict=True):
        for v, v0 in zip(p.detach().flatten().tolist(), p0.flatten().tolist(), strict=True):
            expected += (v - v0) ** 2
    loss = temporal_loss(list(net.parameters()), anchors)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_autoencoder_state_dict_follows_original_tool():
    net = Autoencoder([64, 32, 16, 2], [2, 16, 32, 64])
    keys = list(net.state_dict())
    assert keys == [
        "encoder.0.weight", "encoder.0.bias", "encoder.2.weight", "encoder.2.bias",
        "encoder.4.weight", "encoder.4.bias",
        "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias",
        "decoder.4.weight", "decoder.4.bias",
    ]  # fmt: skip
    sd = net.state_dict()
    assert sd["encoder.0.weight"].shape == (32, 64)
    assert sd["encoder.4.weight"].shape == (2, 16)
    assert sd["decoder.4.weight"].shape == (64, 32)
    # The nested names ttvis wrote before (encoder.{i}.0.weight, last encoder.{L}.weight) load.
    nested = {
        k.replace(f"{p}.{i}.", f"{p}.{i // 2}.0." if i < 4 else f"{p}.{i // 2}."): v
        for k, v in sd.items()
        for p in ("encoder", "decoder")
        for i in (0, 2, 4)
        if k.startswith(f"{p}.{i}.")
    }
    assert "encoder.1.0.weight" in nested and "encoder.2.weight" in nested
    again = Autoencoder([64, 32, 16, 2], [2, 16, 32, 64])
    again.load_state_dict(nested)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in sd.items())
    z, x_hat = net(torch.randn(7, 64))
    assert z.shape == (7, 2) and x_hat.shape == (7, 64)
    state = net.export_state()
    assert state["encoder_dims"] == [64, 32, 16, 2] and state["decoder_dims"] == [2, 16, 32, 64]
    assert list(state["state_dict"]) == keys
    # No hidden layer: a single Linear.
    assert list(Autoencoder([5, 2], [2, 5]).state_dict())[:2] == [
        "encoder.0.weight",
        "encoder.0.bias",
    ]


@pytest.mark.parametrize(
    ("enc", "dec"),
    [([64, 32, 2], [3, 32, 64]), ([64, 32, 2], [2, 32, 63]), ([64, 2], [2, 16, 65])],
)
def test_autoencoder_dims_must_chain(enc, dec):
    with pytest.raises(ValueError, match="do not chain"):
        Autoencoder(enc, dec)


def test_mlp_needs_two_sizes():
    with pytest.raises(ValueError, match="at least an input and an output"):
        mlp([4])


def test_prediction_loss_matches_temperature_scaled_cross_entropy():
    import math

    from ttvis.modules.losses import prediction_loss

    logits_x = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    logits_recon = torch.tensor([[0.5, 0.2, 0.1], [1.0, 0.0, 0.0]])
    counts = torch.tensor([3, 1])
    temperature = float(logits_x.std())
    expected, total = 0.0, 0
    for row, target, c in zip(logits_recon.tolist(), [0, 1], counts.tolist(), strict=True):
        scaled = [v / temperature for v in row]
        log_norm = math.log(sum(math.exp(v) for v in scaled))
        expected += c * (log_norm - scaled[target])
        total += c
    got = prediction_loss(logits_x, logits_recon, counts)
    assert got.item() == pytest.approx(expected / total, rel=1e-5)
    # Agreeing, confident reconstructions cost less than disagreeing ones.
    assert prediction_loss(logits_x, logits_x * 10).item() < got.item()


def test_anchor_loss_brute_force():
    from ttvis.modules.losses import anchor_loss

    gen = torch.Generator().manual_seed(3)
    z, anchor = torch.randn(6, 2, generator=gen), torch.randn(6, 2, generator=gen)
    weight = torch.rand(6, generator=gen)
    counts = torch.tensor([1, 2, 1, 3, 1, 1])
    expected = (
        sum(
            c * w * ((z[i, 0] - anchor[i, 0]) ** 2 + (z[i, 1] - anchor[i, 1]) ** 2)
            for i, (w, c) in enumerate(zip(weight.tolist(), counts.tolist(), strict=True))
        )
        / counts.sum()
    )
    assert anchor_loss(z, anchor, weight, counts).item() == pytest.approx(float(expected), rel=1e-5)
    assert anchor_loss(anchor, anchor, weight, counts).item() == 0.0
    # Only some rows anchored: the same as every row with the others weighing 0.
    rows = torch.tensor([1, 3, 4])
    zero_elsewhere = torch.zeros(6).index_copy(0, rows, weight[rows])
    torch.testing.assert_close(
        anchor_loss(z, anchor[rows], weight[rows], counts, rows),
        anchor_loss(z, anchor, zero_elsewhere, counts),
    )


def test_export_state_folds_input_normalisation():
    from ttvis.modules.autoencoder import Autoencoder

    torch.manual_seed(0)
    net = Autoencoder([5, 8, 8, 2], [2, 8, 8, 5])
    shift, scale = torch.randn(5), 3.5
    x = torch.randn(10, 5)
    z = net.encoder((x - shift) / scale)
    recon = net.decoder(z) * scale + shift
    exported = Autoencoder([5, 8, 8, 2], [2, 8, 8, 5])
    exported.load_state_dict(net.export_state(shift, scale)["state_dict"])
    z2, recon2 = exported(x)
    torch.testing.assert_close(z2, z, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(recon2, recon, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hidden", [[8, 8], []])
def test_export_state_folds_each_epochs_biases(hidden):
    from ttvis.modules.autoencoder import Autoencoder

    torch.manual_seed(0)
    enc, dec = [5, *hidden, 2], [2, *hidden, 5]
    net = Autoencoder(enc, dec, n_epochs=3)
    with torch.no_grad():  # trained biases are not zero
        net.encoder_epoch_bias.normal_()
        net.decoder_epoch_bias.normal_()
    shifts, scales = torch.randn(3, 5), torch.tensor([0.5, 2.0, 3.5])
    x = torch.randn(10, 5)
    for e in range(3):
        # Brute force: the epoch's bias added to the first layer's output by hand.
        h = net.encoder[0]((x - shifts[e]) / scales[e]) + net.encoder_epoch_bias[e]
        z = net.encoder[1:](h) if len(net.encoder) > 1 else h
        g = net.decoder[0](z) + net.decoder_epoch_bias[e]
        recon = (net.decoder[1:](g) if len(net.decoder) > 1 else g) * scales[e] + shifts[e]
        exported = Autoencoder(enc, dec)  # a plain network, as the original tool loads it
        exported.load_state_dict(net.export_state(shifts[e], scales[e], e)["state_dict"])
        z2, recon2 = exported(x)
        torch.testing.assert_close(z2, z, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(recon2, recon, rtol=1e-5, atol=1e-5)
        rows = torch.full((10,), e)
        torch.testing.assert_close(net.encode((x - shifts[e]) / scales[e], rows), z)
    with pytest.raises(ValueError, match="one epoch at a time"):
        net.export_state(shifts[0], scales[0])


def test_epoch_bias_needs_per_epoch_normalisation():
    from functools import partial

    from ttvis.modules import VisualizerModule

    with pytest.raises(ValueError, match="epoch_bias needs per-epoch normalisation"):
        VisualizerModule(
            [4, 8, 2],
            [2, 8, 4],
            partial(torch.optim.Adam),
            input_shift=torch.zeros(4),
            epoch_bias=True,
        )


def test_interpolate_edges_on_segments_without_noise():
    gen = torch.Generator().manual_seed(0)
    head, tail = torch.randn(500, 6, generator=gen), torch.randn(500, 6, generator=gen)
    points = interpolate_edges(head, tail, 0.0, torch.Generator().manual_seed(1))
    lam = torch.rand(500, 1, generator=torch.Generator().manual_seed(1))  # the same draws
    torch.testing.assert_close(points, lam * head + (1 - lam) * tail)


def test_interpolate_edges_noise_has_the_stated_spread():
    d, m, noise = 16, 20000, 1.5
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(m, d, generator=gen)
    tail = head + torch.randn(m, d, generator=gen) * torch.rand(m, 1, generator=gen) * 3
    rng = torch.Generator().manual_seed(2)
    points = interpolate_edges(head, tail, noise, rng)
    rng = torch.Generator().manual_seed(2)
    lam = torch.rand(m, 1, generator=rng)
    offset = points - (lam * head + (1 - lam) * tail)
    # Brute force: each edge's offset divided by its stated standard deviation is N(0, 1).
    per_dim_sd = noise * (head - tail).norm(dim=1, keepdim=True) / d**0.5
    z = (offset / per_dim_sd).flatten().numpy()
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert stats.kstest(z[:5000], "norm").pvalue > 1e-3


def test_pred_weight_leaves_vertices_out_of_the_prediction_loss():
    from functools import partial

    from ttvis.modules import VisualizerModule
    from ttvis.subject import LinearHead

    gen = torch.Generator().manual_seed(0)
    head = LinearHead(torch.randn(6, 3, generator=gen), torch.zeros(3), 0.0)
    batch = {
        "x": torch.randn(8, 6, generator=gen),
        "head_pos": torch.tensor([0, 1, 2, 3]),
        "tail_pos": torch.tensor([4, 5, 6, 7]),
        "counts": torch.ones(8, dtype=torch.long),
    }

    def total(lambda_pred: float, pred_weight: torch.Tensor | None) -> float:
        torch.manual_seed(0)  # same weights and negatives every time
        module = VisualizerModule(
            [6, 8, 2],
            [2, 8, 6],
            partial(torch.optim.Adam),
            lambda_pred=lambda_pred,
            subject_head=head,
        )
        torch.manual_seed(1)
        extra = {} if pred_weight is None else {"pred_weight": pred_weight}
        return float(module.training_step({**batch, **extra}, 0))

    plain = total(0.0, None)
    assert total(1.0, torch.zeros(8)) == pytest.approx(plain)  # every vertex left out
    assert total(1.0, torch.ones(8)) == pytest.approx(total(1.0, None))
    assert total(1.0, torch.ones(8)) > plain


def test_boundary_x_joins_the_reconstruction_and_prediction_losses():
    from functools import partial

    from ttvis.modules import VisualizerModule
    from ttvis.modules.losses import prediction_loss
    from ttvis.subject import LinearHead

    gen = torch.Generator().manual_seed(0)
    head = LinearHead(torch.randn(6, 3, generator=gen), torch.zeros(3), 0.0)
    x, boundary_x = torch.randn(8, 6, generator=gen), torch.randn(3, 6, generator=gen)
    head_pos, tail_pos = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    torch.manual_seed(0)
    module = VisualizerModule(
        [6, 8, 2], [2, 8, 6], partial(torch.optim.Adam), lambda_pred=1.0, subject_head=head
    )
    batch = {"x": x, "head_pos": head_pos, "tail_pos": tail_pos, "boundary_x": boundary_x}
    torch.manual_seed(1)  # the negatives
    got = float(module.training_step(batch, 0))

    x_all = torch.cat([x, boundary_x])  # identity normalisation
    with torch.no_grad():
        z, x_hat = module.autoencoder(x_all)
        torch.manual_seed(1)
        expected = (
            umap_loss(z[head_pos], z[tail_pos], module.a, module.b)
            + reconstruction_loss(x_all, x_hat)
            + prediction_loss(head(x_all), head(x_hat))
        )
    assert got == pytest.approx(float(expected), rel=1e-5)


def test_boundary_x_rows_take_their_own_epochs_normalisation_bias_and_head():
    """TimeVis: each point near a decision boundary is normalised, biased and judged as a
    row of its own epoch (``boundary_epoch_pos``), after the vertices and the interpolations
    (which take their head end's epoch)."""
    from functools import partial

    from ttvis.modules.losses import prediction_loss
    from ttvis.modules.timevis import EpochHeads, TimeVisModule
    from ttvis.subject import LinearHead

    gen = torch.Generator().manual_seed(0)
    heads = EpochHeads(
        [LinearHead(torch.randn(6, 3, generator=gen), torch.zeros(3), 0.0) for _ in range(2)]
    )
    shift, scale = torch.randn(2, 6, generator=gen), torch.tensor([0.5, 3.0])
    module = TimeVisModule(
        [6, 8, 2],
        [2, 8, 6],
        partial(torch.optim.Adam),
        lambda_pred=1.0,
        input_shift=shift,
        input_scale=scale,
        subject_head=heads,
        epoch_bias=True,
        mix_fraction=0.5,
    )
    with torch.no_grad():  # distinct epoch biases, so a row given the wrong epoch shows
        module.autoencoder.encoder_epoch_bias.normal_(generator=gen)
        module.autoencoder.decoder_epoch_bias.normal_(generator=gen)
    x, boundary_x = torch.randn(8, 6, generator=gen), torch.randn(3, 6, generator=gen)
    batch = {
        "x": x,
        "head_pos": torch.tensor([0, 1, 2, 3]),
        "tail_pos": torch.tensor([4, 5, 6, 7]),
        "epoch_pos": torch.tensor([0, 0, 1, 1, 0, 1, 0, 1]),
        "boundary_x": boundary_x,
        "boundary_epoch_pos": torch.tensor([1, 0, 0]),
    }
    module._generator = torch.Generator().manual_seed(1)  # interpolations, then negatives
    got = float(module.training_step(batch, 0))

    head_pos, tail_pos, epoch_pos = batch["head_pos"], batch["tail_pos"], batch["epoch_pos"]
    rows = torch.cat([epoch_pos, epoch_pos[head_pos[:2]], batch["boundary_epoch_pos"]])
    generator = torch.Generator().manual_seed(1)
    x_norm = (x - shift[epoch_pos]) / scale[epoch_pos][:, None]
    mixed = interpolate_edges(x_norm[head_pos[:2]], x_norm[tail_pos[:2]], 0.0, generator)
    boundary_rows = batch["boundary_epoch_pos"]
    x_all = torch.cat(
        [x_norm, mixed, (boundary_x - shift[boundary_rows]) / scale[boundary_rows][:, None]]
    )
    with torch.no_grad():
        z, x_hat = module.autoencoder(x_all, rows)
        heads.rows = rows
        spread = scale[rows][:, None]
        expected = (
            umap_loss(z[head_pos], z[tail_pos], module.a, module.b, generator=generator)
            + reconstruction_loss(x_all, x_hat)
            + prediction_loss(
                heads(x_all * spread + shift[rows]), heads(x_hat * spread + shift[rows])
            )
        )
    assert got == pytest.approx(float(expected), rel=1e-5)
    del batch["boundary_epoch_pos"]
    with pytest.raises(ValueError, match="boundary_epoch_pos"):
        module.training_step(batch, 0)


@pytest.mark.parametrize("power", [1.0, 8.0])
def test_anchor_weight_is_the_kept_share_to_the_anchor_power(demo_run, power):
    from ttvis.datamodules import DVIDataModule
    from ttvis.run import TrainingRun

    run = TrainingRun(demo_run)
    previous = DVIDataModule(run, epoch=1, n_neighbors=5)
    previous.build()
    positions = np.random.default_rng(0).normal(size=(run.train_points.size, 2))
    dm = DVIDataModule(
        run,
        epoch=2,
        n_neighbors=5,
        prev_knn=previous.knn,
        prev_positions=positions.astype(np.float32),
        anchor_power=power,
    )
    dm.build()
    _, _, _, vertex_data = dm.stream_spec()
    kept = np.array(
        [
            len(set(a) & set(b)) / 5
            for a, b in zip(previous.knn.indices, dm.knn.indices, strict=True)
        ]
    )
    np.testing.assert_allclose(vertex_data["anchor_weight"].numpy(), kept**power, rtol=1e-6)
    np.testing.assert_allclose(vertex_data["anchor"].numpy(), positions, rtol=1e-6)
    assert 0 < kept.mean() < 1


@pytest.mark.parametrize("dedup", [True, False])
def test_edge_stream_carries_each_vertexs_anchor_features(dedup):
    reps = _reps()
    anchor_vertex = torch.tensor([3, -1, 0, 5, -1, 2])
    stream = EdgeStream(
        reps, _edge_set(), n_edges=50, batch_size=20, anchor_vertex=anchor_vertex, dedup=dedup
    )
    batch = next(iter(stream))
    vertices = [int(torch.nonzero((reps == row).all(1))[0]) for row in batch["x"]]
    if dedup:  # only the rows whose vertex has an anchor, and which rows they are
        rows = [i for i, v in enumerate(vertices) if int(anchor_vertex[v]) >= 0]
        assert 0 < len(rows) < len(vertices)
        assert batch["anchor_rows"].tolist() == rows
        want = [int(anchor_vertex[vertices[i]]) for i in rows]
    else:  # every row, a vertex's own features where it has none
        assert "anchor_rows" not in batch
        want = [v if int(anchor_vertex[v]) < 0 else int(anchor_vertex[v]) for v in vertices]
    torch.testing.assert_close(batch["anchor_x"], reps[want])


def test_anchor_x_is_encoded_and_pulled_with_both_ends_trained():
    from functools import partial

    from ttvis.modules import VisualizerModule
    from ttvis.modules.losses import anchor_loss, reconstruction_loss, umap_loss

    gen = torch.Generator().manual_seed(0)
    x, anchor_x = torch.randn(8, 6, generator=gen), torch.randn(8, 6, generator=gen)
    weight = torch.rand(8, generator=gen)
    anchor_x.requires_grad_(True)
    head_pos, tail_pos = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    torch.manual_seed(0)
    module = VisualizerModule([6, 8, 2], [2, 8, 6], partial(torch.optim.Adam), lambda_anchor=0.5)
    batch = {
        "x": x,
        "head_pos": head_pos,
        "tail_pos": tail_pos,
        "anchor_x": anchor_x,
        "anchor_weight": weight,
    }
    torch.manual_seed(1)  # the negatives
    got = module.training_step(batch, 0)
    encoder = module.autoencoder.encoder
    torch.manual_seed(1)
    with torch.no_grad():
        z, x_hat = module.autoencoder(x)
        expected = (
            umap_loss(z[head_pos], z[tail_pos], module.a, module.b)
            + reconstruction_loss(x, x_hat)
            + 0.5 * anchor_loss(z, encoder(anchor_x), weight)
        )
    assert float(got.detach()) == pytest.approx(float(expected), rel=1e-5)
    # Both ends are trained: the loss is not detached from the anchor's encoding.
    got.backward()
    assert anchor_x.grad is not None and anchor_x.grad.abs().sum() > 0
    # Only some vertices carrying an anchor (as a deduplicating stream sends them) is the
    # same step as every vertex carrying one with the others weighing 0.
    rows = torch.tensor([0, 2, 5])
    weight_elsewhere_0 = torch.zeros(8).index_copy(0, rows, weight[rows])
    torch.manual_seed(1)
    full = module.training_step({**batch, "anchor_weight": weight_elsewhere_0}, 0)
    torch.manual_seed(1)
    subset = module.training_step(
        {**batch, "anchor_x": anchor_x[rows].detach(), "anchor_rows": rows}, 0
    )
    torch.testing.assert_close(subset, full)


def test_some_anchored_rows_train_under_bf16_autocast():
    """``anchor_rows`` under ``trainer.precision=bf16-mixed``: bf16 positions, float32 weights."""
    from functools import partial

    from ttvis.modules import VisualizerModule

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, generator=gen)
    rows = torch.tensor([1, 2, 6])
    batch = {
        "x": x,
        "head_pos": torch.arange(4),
        "tail_pos": torch.arange(4, 8),
        "anchor_x": torch.randn(3, 6, generator=gen),
        "anchor_rows": rows,
        "anchor_weight": torch.rand(8, generator=gen),
    }
    module = VisualizerModule(
        [6, 8, 2], [2, 8, 6], partial(torch.optim.Adam), lambda_anchor=0.5, anchor_fraction=0.5
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)


def test_anchor_fraction_estimates_the_anchor_loss_without_bias():
    """Encoding a random half of the anchors, weighed up, gives the full anchor loss on
    average; with ``anchor_rows`` (only some vertices anchored) as without."""
    from functools import partial

    from ttvis.modules import VisualizerModule
    from ttvis.modules.visualizer import ReconstructedRows

    gen = torch.Generator().manual_seed(0)
    x, anchor_x = torch.randn(12, 6, generator=gen), torch.randn(12, 6, generator=gen)
    batch = {
        "x": x,
        "head_pos": torch.arange(6),
        "tail_pos": torch.arange(6, 12),
        "counts": torch.randint(1, 4, (12,), generator=gen),
        "anchor_x": anchor_x,
        "anchor_weight": torch.rand(12, generator=gen),
    }
    module = VisualizerModule([6, 8, 2], [2, 8, 6], partial(torch.optim.Adam), lambda_anchor=1.0)
    module._generator = torch.Generator().manual_seed(1)
    rows = torch.tensor([0, 3, 4, 7, 8, 11])
    for extra in ({}, {"anchor_x": anchor_x[rows], "anchor_rows": rows}):
        step = {**batch, **extra}

        def anchor_term(step=step) -> float:
            with torch.no_grad():
                z = module.autoencoder.encode(x)
                terms = {
                    name: loss
                    for name, _, loss in module._further_terms(
                        step, None, ReconstructedRows(x, x, step["counts"], None, None, None), z
                    )
                }
            return float(terms["anchor"])

        module.anchor_fraction = 1.0
        full = anchor_term()
        module.anchor_fraction = 0.5
        draws = [anchor_term() for _ in range(3000)]
        assert len(set(draws)) > 1  # a different half each step
        assert np.mean(draws) == pytest.approx(full, rel=0.03)


def test_edge_stream_adds_points_near_the_segment_flips():
    segments = FlipSegments(np.array([0, 2]), np.array([5, 3]), np.array([0.25, 0.75], np.float32))
    reps = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))  # no two collinear
    stream = EdgeStream(
        reps,
        _edge_set(),
        n_edges=900,
        batch_size=400,
        seed=1,
        segments=segments,
        segment_fraction=0.5,
        segment_width=0.1,
    )
    seen = Counter()
    for batch in stream:
        n_edges = batch["head_pos"].shape[0]
        points = batch["boundary_x"]
        assert points.shape == (round(0.5 * n_edges), 3)
        for p in points:
            # Which segment is p on, and at what mixing weight l (p = l a + (1 - l) b)?
            for k, (a, b) in enumerate(zip(segments.first, segments.second, strict=True)):
                d = reps[a] - reps[b]
                lam = float((p - reps[b]) @ d / (d @ d))
                if torch.allclose(lam * reps[a] + (1 - lam) * reps[b], p, atol=1e-4):
                    assert abs(lam - segments.flip[k]) <= 0.1 + 1e-5
                    seen[k] += 1
                    break
            else:
                raise AssertionError(f"{p} lies on no segment")
    assert sum(seen.values()) == 200 + 200 + 50
    assert min(seen.values()) > 150, "segments are not drawn uniformly"


def test_draws_per_visualizer_epoch_are_capped_per_subject_epoch(demo_run):
    """``max_draws_per_epoch`` bounds DVI's draws, and TimeVis's per subject epoch in its
    complex; below the cap the draws are ``s_n_epochs * sum(p)`` as before."""
    from ttvis.datamodules import DVIDataModule, TimeVisDataModule
    from ttvis.run import TrainingRun

    run = TrainingRun(demo_run)
    free = DVIDataModule(run, epoch=1, n_neighbors=5)
    free.build()
    assert free.n_edges == free.edges.edges_per_epoch(free.s_n_epochs)
    loose = DVIDataModule(run, epoch=1, n_neighbors=5, max_draws_per_epoch=free.n_edges + 1)
    loose.build()
    assert loose.n_edges == free.n_edges
    capped = DVIDataModule(run, epoch=1, n_neighbors=5, max_draws_per_epoch=1000)
    capped.build()
    assert capped.n_edges == 1000
    timevis = TimeVisDataModule(run, n_neighbors=5, max_draws_per_epoch=1000)
    timevis.build()
    assert timevis.n_edges == 1000 * len(run.epochs)


@pytest.mark.parametrize("ramp", [0.0, 1.5])
def test_learning_rate_ramp_scales_the_schedulers_rate_step_by_step(ramp):
    """With ``lr_ramp_epochs`` the rate of step ``s`` is the scheduler's times ``(s + 1) /
    ramp_steps`` until the ramp ends (here within the second epoch), and the scheduler steps
    from its own rates, not the ramped ones."""
    from functools import partial

    import lightning as L
    from torch.utils.data import DataLoader

    from ttvis.modules import VisualizerModule

    gen = torch.Generator().manual_seed(0)
    ends = {"head_pos": torch.arange(4), "tail_pos": torch.arange(4, 8)}
    batches = [{"x": torch.randn(8, 6, generator=gen), **ends} for _ in range(4)]
    module = VisualizerModule(
        [6, 8, 2],
        [2, 8, 6],
        partial(torch.optim.Adam, lr=0.01),
        partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
        lr_ramp_epochs=ramp,
    )
    seen = []

    class RecordRate(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            seen.append(optimizer.param_groups[0]["lr"])

    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[RecordRate()],
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    scheduled = [0.01] * 4 + [0.005] * 4 + [0.0025] * 4
    ramp_steps = ramp * 4
    expected = [
        lr * min((s + 1) / ramp_steps, 1.0) if ramp else lr for s, lr in enumerate(scheduled)
    ]
    assert seen == pytest.approx(expected, rel=1e-6)


def test_recon_rows_estimate_the_reconstruction_and_prediction_losses_without_bias():
    """Decoding a random ``recon_rows`` of a batch's vertex rows (the extra rows always),
    weighed up, gives the full reconstruction and prediction losses on average; with at least
    as many allowed as there are vertex rows the step is exactly the full one."""
    from functools import partial

    from ttvis.modules import VisualizerModule

    gen = torch.Generator().manual_seed(0)
    n_vertices, dim = 40, 6
    batch = {
        "x": torch.randn(n_vertices, dim, generator=gen),
        "head_pos": torch.arange(20),
        "tail_pos": torch.arange(20, 40),
        "counts": torch.randint(1, 5, (n_vertices,), generator=gen),
        # extra rows, decoded every step; far out, so that their share of the losses shows
        "boundary_x": 4 * torch.randn(8, dim, generator=gen),
    }
    module = VisualizerModule(
        [dim, 8, 2], [2, 8, dim], partial(torch.optim.Adam),
        subject_head=torch.nn.Linear(dim, 3), lambda_pred=1.0,
    )  # fmt: skip
    module._generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # spread-out reconstructions, so the prediction loss feels its scale
        module.autoencoder.decoder[-1].weight.mul_(20)

    def losses(recon_rows: int | None) -> tuple[float, float]:
        module.recon_rows = recon_rows
        module._epoch_sums, module._epoch_edges = {}, 0
        with torch.no_grad():
            module.training_step(batch, 0)
        return float(module._epoch_sums["recon"]), float(module._epoch_sums["pred"])

    full = losses(None)
    assert losses(n_vertices) == full
    draws = np.array([losses(10) for _ in range(3000)])
    assert len(set(draws[:, 0])) > 1  # different rows each step
    assert draws[:, 0].mean() == pytest.approx(full[0], rel=0.02)
    # The prediction loss's logit spread is estimated from the kept rows, weighed as they are.
    assert draws[:, 1].mean() == pytest.approx(full[1], rel=0.02)


def test_weighted_std_counts_each_row_its_weight_in_times():
    from ttvis.modules.losses import weighted_std

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(7, 3, generator=gen, dtype=torch.float64)
    weights = torch.tensor([1, 3, 2, 1, 5, 1, 2])
    repeated = values.repeat_interleave(weights, dim=0)
    assert float(weighted_std(values, weights)) == pytest.approx(float(repeated.std()), rel=1e-12)
    assert float(weighted_std(values, torch.ones(7))) == pytest.approx(float(values.std()))
