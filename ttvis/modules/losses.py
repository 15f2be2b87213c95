"""Visualizer losses (docs/design.md §4.4): UMAP cross-entropy, reconstruction, temporal anchor."""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_mean(per_row: Tensor, counts: Tensor | None = None) -> Tensor:
    """Mean of ``per_row [U]``, row u counted ``counts[u]`` times (plain mean if None; 0 when
    every count is 0)."""
    if counts is None:
        return per_row.mean()
    counts = counts.to(per_row.dtype)
    return (per_row * counts).sum() / counts.sum().clamp_min(torch.finfo(per_row.dtype).tiny)


def umap_ab(spread: float = 1.0, min_dist: float = 0.1) -> tuple[float, float]:
    """UMAP's low-dimensional curve ``1 / (1 + a d^(2b))`` parameters from ``umap-learn``."""
    from umap.umap_ import find_ab_params

    a, b = find_ab_params(spread, min_dist)
    return float(a), float(b)


def umap_loss(
    emb_from: Tensor,
    emb_to: Tensor,
    a: float,
    b: float,
    negative_sample_rate: int = 5,
    repulsion_strength: float = 1.0,
    generator: torch.Generator | None = None,
    eps: float = 1e-4,
    head_vertex: Tensor | None = None,
    tail_vertex: Tensor | None = None,
    negatives: Tensor | None = None,
) -> Tensor:
    """Fuzzy-set cross-entropy between graph membership and low-dimensional similarity.

    Positive pairs are the ``B`` edges; negatives pair each edge's head with
    ``negative_sample_rate`` random tails drawn from the batch (membership 0). Given the ends'
    vertex ids, a drawn tail that is the head's own vertex or its edge's tail vertex is not a
    negative and adds nothing (it still counts in the mean): each head meets its own edge's
    tail in ``m / B`` of its draws, so keeping those made the loss depend on the batch size
    (N processes on ``B / N`` edges each kept fewer neighbours than one on ``B``).

    Args:
        emb_from: ``[B, 2]`` embeddings of edge heads.
        emb_to: ``[B, 2]`` embeddings of edge tails.
        a, b: curve parameters from :func:`umap_ab`.
        negative_sample_rate: m, negatives per edge.
        repulsion_strength: weight of the negative (repulsive) term.
        generator: random source for the negatives (on the embeddings' device).
        eps: lower bound on probabilities inside the logarithms.
        head_vertex, tail_vertex: ``[B]`` vertex ids of the edge ends, or None (every drawn
            tail is a negative).
        negatives: ``[B * m]`` the drawn tails' positions (draw k is edge ``k % B``'s), e.g.
            from :func:`negatives_in_group`; None: drawn uniformly from ``generator``.

    Returns:
        Scalar mean cross-entropy over the ``B * (1 + m)`` pairs.
    """
    batch = emb_from.shape[0]
    d2_pos = (emb_from - emb_to).pow(2).sum(1)
    neg_idx = negatives
    if neg_idx is None:
        neg_idx = torch.randint(
            0, batch, (batch * negative_sample_rate,), device=emb_to.device, generator=generator
        )
    neg_from = emb_from.repeat(negative_sample_rate, 1)
    d2_neg = (neg_from - emb_to[neg_idx]).pow(2).sum(1)
    # q = 1 / (1 + a d^(2b)), written with d^2 to avoid sqrt's infinite gradient at 0.
    q_pos = 1.0 / (1.0 + a * d2_pos.clamp_min(1e-12).pow(b))
    q_neg = 1.0 / (1.0 + a * d2_neg.clamp_min(1e-12).pow(b))
    attraction = -torch.log(q_pos.clamp(eps, 1.0))
    repulsion = -torch.log((1.0 - q_neg).clamp(eps, 1.0)) * repulsion_strength
    if head_vertex is not None and tail_vertex is not None:
        drawn = tail_vertex[neg_idx]
        own = tail_vertex.repeat(negative_sample_rate)
        not_negative = (drawn == head_vertex.repeat(negative_sample_rate)) | (drawn == own)
        repulsion = repulsion.masked_fill(not_negative, 0.0)
    return torch.cat([attraction, repulsion]).mean()


def negatives_in_group(
    head_group: Tensor,
    tail_group: Tensor,
    negative_sample_rate: int,
    generator: torch.Generator | None = None,
    window: int = 0,
) -> Tensor:
    """Each edge's negatives: tails drawn uniformly among those whose group is within
    ``window`` of the head's (0: its own group).

    Draw ``k`` belongs to edge ``k % B``, as :func:`umap_loss` pairs them. A head with no such
    tail in the batch draws from all the tails. Sorting and binary search keep every shape
    fixed, so nothing waits for the host (a CUDA graph can hold it).

    Args:
        head_group, tail_group: ``[B]`` integer group of each edge's head and tail.
        negative_sample_rate: m, draws per edge.
        generator: random source on the groups' device.
        window: how far (in group number) a tail's group may be from the head's.

    Returns:
        ``[B * m]`` positions in the batch's tails.
    """
    sorted_groups, order = torch.sort(tail_group, stable=True)
    heads = head_group.repeat(negative_sample_rate)
    first = torch.searchsorted(sorted_groups, heads - window)
    count = torch.searchsorted(sorted_groups, heads + window, right=True) - first
    u = torch.rand(heads.shape, device=heads.device, generator=generator)
    # u < 1, but u * n may round up to n in float32: clamp to the last position.
    anywhere = (u * tail_group.shape[0]).long().clamp_max(tail_group.shape[0] - 1)
    within = first + torch.minimum((u * count).long(), (count - 1).clamp_min(0))
    return torch.where(count > 0, order[within.clamp_max(order.shape[0] - 1)], anywhere)


def reconstruction_loss(x: Tensor, x_hat: Tensor, counts: Tensor | None = None) -> Tensor:
    """Mean squared reconstruction error.

    Args:
        x: ``[U, D]`` inputs.
        x_hat: ``[U, D]`` reconstructions.
        counts: ``[U]`` how often each row occurs among the batch's edge ends; weighting by it
            makes the loss over unique rows equal to the loss over all ``2B`` edge ends.

    Returns:
        Scalar.
    """
    per_row = (x - x_hat).pow(2).mean(1)
    return weighted_mean(per_row, counts)


def prediction_loss(
    logits_x: Tensor,
    logits_recon: Tensor,
    counts: Tensor | None = None,
    row_weights: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of the subject's prediction on reconstructions against that on inputs.

    Keeps ``argmax head(g(f(x))) == argmax head(x)`` (prediction preserving, docs/design.md §7):
    the target is the subject's predicted class on ``x`` (its softmax as a soft target kept few
    predictions where early epochs' logits are near-uniform, docs/results.md 2026-12-04 (15)).

    Args:
        logits_x: ``[U, C]`` subject logits on the inputs (no gradient needed).
        logits_recon: ``[U, C]`` subject logits on the reconstructions.
        counts: ``[U]`` edge-end multiplicity of each row, as in :func:`reconstruction_loss`.
        row_weights: ``[U]`` how many of the batch's rows each row stands for, when the rows
            are a sample of them (see :func:`weighted_std`); None: the rows are the batch.

    Returns:
        Scalar.
    """
    target = logits_x.argmax(1)
    # Logits of an early-epoch classifier are tiny (near-uniform softmax); measuring them in
    # units of their own spread gives the loss the same grip at every stage of training.
    logits = logits_x.float()
    spread = logits.std() if row_weights is None else weighted_std(logits, row_weights)
    per_row = torch.nn.functional.cross_entropy(
        logits_recon.float() / spread.clamp_min(1e-6), target, reduction="none"
    )
    return weighted_mean(per_row, counts)


def weighted_std(values: Tensor, row_weights: Tensor) -> Tensor:
    """Standard deviation of every entry of ``values [R, C]``, row r's entries counted
    ``row_weights[r]`` times: the spread of the rows a sample of ``R`` rows stands for (with
    unit weights, ``values.std()``)."""
    w = row_weights.to(values.dtype)[:, None].expand_as(values)
    mean = (w * values).sum() / w.sum()
    return ((w * (values - mean).pow(2)).sum() / (w.sum() - 1).clamp_min(1e-12)).sqrt()


def anchor_loss(
    z: Tensor,
    anchor: Tensor,
    weight: Tensor,
    counts: Tensor | None = None,
    rows: Tensor | None = None,
) -> Tensor:
    """Weighted squared distance of embeddings to their anchor positions.

    Args:
        z: ``[U, 2]`` current embeddings.
        anchor: ``[U, 2]`` positions to be pulled towards (``[A, 2]`` with ``rows``).
        weight: ``[U]`` per-vertex weight in 0..1 (share of k-NN kept since the previous epoch;
            ``[A]`` with ``rows``).
        counts: ``[U]`` edge-end multiplicity, as in :func:`reconstruction_loss`.
        rows: optional ``[A]`` rows of ``z`` that have an anchor; every other row weighs 0 (it
            still counts in the mean, so the loss equals the full one with zero weights).

    Returns:
        Scalar.
    """
    anchored = z if rows is None else z[rows]
    per_row = weight * (anchored - anchor).pow(2).sum(1)
    if rows is not None:
        per_row = per_row.new_zeros(z.shape[0]).index_copy(0, rows, per_row)
    return weighted_mean(per_row, counts)


def temporal_loss(params: list[Tensor], anchors: list[Tensor]) -> Tensor:
    """Sum of squared differences between current and previous-epoch visualizer weights."""
    total = params[0].new_zeros(())
    for p, p0 in zip(params, anchors, strict=True):
        total = total + (p - p0).pow(2).sum()
    return total
