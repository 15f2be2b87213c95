"""TimeVis's visualizer: :class:`VisualizerModule` with one subject head per vertex's epoch.

One TimeVis visualizer serves every subject epoch, so the prediction-preserving loss must judge
each reconstructed vertex with the classifier of *its own* epoch. :class:`EpochHeads` holds the
heads of all epochs and, for every row of a batch, applies the head of that row's epoch;
:class:`TimeVisModule` tells it the rows' epochs (the streams yield ``epoch_pos`` per vertex).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ttvis.modules.losses import negatives_in_group
from ttvis.modules.visualizer import VisualizerModule
from ttvis.subject import LinearHead


class EpochHeads(nn.Module):
    """Subject heads of every epoch, applied row by row according to ``rows``.

    Args:
        heads: one head ``[M, D] -> [M, C]`` per epoch position.
        logit_scales: optional ``[E]`` typical logit spread of each epoch (e.g. the std of its
            saved predictions); each head's logits are divided by it. An early classifier's
            logits are tiny, and the prediction loss measures logits in units of the batch's
            spread, which in a batch mixing epochs is set by the late ones; dividing puts
            every epoch on the same footing. Argmax, and so prediction preserving, is unchanged.

    Before each call set :attr:`rows` to the ``[M]`` epoch positions of the rows about to be
    passed. When every head is a :class:`~ttvis.subject.LinearHead` (recovered from saved
    predictions, or an affine model head: :func:`~ttvis.subject.as_linear_head`), their weights
    are stacked into one ``[D, E x C]`` product: every epoch's logits of every row in one small
    matrix product, each row keeping its own epoch's (E times a head's arithmetic, which is
    small next to the autoencoder's; no loop, no host synchronisation). Other heads: on the CPU
    the forward pass groups rows by epoch (a loop over the epochs present, vectorised over
    rows); on an accelerator grouping would make the host wait for each epoch's row count every
    step, so there every head runs on every row.
    :attr:`gather_all` forces one or the other of those two.
    """

    def __init__(self, heads: list[nn.Module], logit_scales: list[float] | None = None) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        scales = torch.ones(len(heads)) if logit_scales is None else torch.tensor(logit_scales)
        self.register_buffer("logit_scales", scales.float().clamp_min(1e-6))
        self.rows: Tensor | None = None
        self.gather_all: bool | None = None  # None: on any device but the CPU
        self.stacked = bool(heads) and all(isinstance(h, LinearHead) for h in heads)
        if self.stacked:  # [D, E * C] and [E * C], each epoch's divided by its logit scale
            self.register_buffer(
                "stacked_weight",
                torch.cat([h.weight / s for h, s in zip(heads, self.logit_scales, strict=True)], 1),
            )
            self.register_buffer(
                "stacked_bias",
                torch.cat([h.bias / s for h, s in zip(heads, self.logit_scales, strict=True)]),
            )

    def forward(self, x: Tensor) -> Tensor:
        rows = self.rows
        if rows is None or rows.shape[0] != x.shape[0]:
            raise RuntimeError(
                f"EpochHeads: {x.shape[0]} rows but epoch positions for "
                f"{None if rows is None else rows.shape[0]}; set .rows before the call"
            )
        if self.stacked:
            every = (x @ self.stacked_weight + self.stacked_bias).view(
                x.shape[0], len(self.heads), -1
            )
            return every[torch.arange(x.shape[0], device=x.device), rows]
        gather_all = x.device.type != "cpu" if self.gather_all is None else self.gather_all
        return self._every_head(x, rows) if gather_all else self._grouped(x, rows)

    def _grouped(self, x: Tensor, rows: Tensor) -> Tensor:
        """``[M, C]``: each epoch's head on its own rows only."""
        out: Tensor | None = None
        for t in torch.unique(rows).tolist():
            mask = rows == t
            logits = self.heads[int(t)](x[mask]) / self.logit_scales[int(t)]
            if out is None:
                out = logits.new_zeros(x.shape[0], logits.shape[1])
            out[mask] = logits
        assert out is not None
        return out

    def _every_head(self, x: Tensor, rows: Tensor) -> Tensor:
        """``[M, C]``: every head on every row (``[E, M, C]``), each row's own epoch kept."""
        every = torch.stack([head(x) for head in self.heads]) / self.logit_scales[:, None, None]
        return every[rows, torch.arange(x.shape[0], device=x.device)]


class TimeVisModule(VisualizerModule):
    """:class:`VisualizerModule` for a spatio-temporal complex (docs/design.md §5).

    Identical losses (UMAP + ``lambda1`` reconstruction, optional prediction loss); with an
    :class:`EpochHeads` as ``subject_head`` each vertex (and each interpolated edge point,
    which takes its head end's epoch) is judged by its own epoch's classifier. Batches must
    then carry ``epoch_pos [U]``.

    Args:
        negatives_epoch_window: None: each edge's UMAP negatives are drawn among all the
            batch's tails, most of them other epochs' vertices; ``w``: among those of epochs
            within ``w`` positions of its head's (0: its own epoch; :meth:`draw_negatives`).
            Needs batches with ``epoch_pos``.
        *args, **kwargs: as :class:`VisualizerModule`.
    """

    def __init__(self, *args, negatives_epoch_window: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if negatives_epoch_window is not None and negatives_epoch_window < 0:
            raise ValueError(
                f"negatives_epoch_window={negatives_epoch_window}: expected null or an epoch "
                "count >= 0"
            )
        self.negatives_epoch_window = (
            None if negatives_epoch_window is None else int(negatives_epoch_window)
        )

    def draw_negatives(
        self, rows: Tensor | None, head_pos: Tensor, tail_pos: Tensor
    ) -> Tensor | None:
        """With ``negatives_epoch_window``, each edge's negatives among the tails of epochs
        within the window of its head's (``rows [U + ...]``: epoch positions, the batch's vertex
        rows first; :func:`~ttvis.modules.losses.negatives_in_group`); else None."""
        if self.negatives_epoch_window is None or rows is None:
            return None
        return negatives_in_group(
            rows[head_pos],
            rows[tail_pos],
            self.negative_sample_rate,
            self._generator,
            self.negatives_epoch_window,
        )

    def subject_logits(self, x: Tensor, rows: Tensor | None) -> Tensor:
        """Each row judged by its own epoch's head (an :class:`EpochHeads`)."""
        heads = self.subject_head
        if isinstance(heads, EpochHeads):
            heads.rows = rows
        return heads(x)
