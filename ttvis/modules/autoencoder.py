"""The visualizer network: an MLP encoder to 2-D and an MLP decoder back (docs/design.md §4.4)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU between them, none after the last.

    One flat ``Sequential(Linear, ReLU, ..., Linear)``, so that state-dict keys are the original
    tool's ``VisModel``'s (``encoder.0.weight``, ``encoder.2.weight``, ... ``encoder.{2L}.weight``
    for ``L`` hidden layers): its ``vismodel/{epoch}.pth`` files load there as they are.
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {dims}")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True):
        layers += [nn.Linear(d_in, d_out), nn.ReLU(True)]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


_NESTED_KEY = re.compile(r"^(encoder|decoder)\.(\d+)\.(?:0\.)?(weight|bias)$")


def flat_state_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with the key names of :func:`mlp`, also when it has the nested names that
    ttvis wrote before 2026-12-02 (``encoder.{i}.0.weight`` for hidden layer ``i``,
    ``encoder.{L}.weight`` for the last): layer ``i`` becomes ``encoder.{2i}``."""
    nested = any(re.match(r"^(encoder|decoder)\.\d+\.0\.", key) for key in state)
    if not nested:
        return dict(state)
    renamed = {}
    for key, value in state.items():
        match = _NESTED_KEY.match(key)
        if match is None:
            renamed[key] = value
            continue
        part, layer, name = match.groups()
        renamed[f"{part}.{2 * int(layer)}.{name}"] = value
    return renamed


class Autoencoder(nn.Module):
    """Encoder ``[B, D] -> [B, 2]`` and decoder ``[B, 2] -> [B, D]``.

    Args:
        encoder_dims: ``[D, h1, ..., 2]``.
        decoder_dims: ``[2, ..., h1, D]``.
        n_epochs: with ``E > 0``, one learned bias per subject epoch is added to the first
            layer of the encoder (``[E, h1]``) and of the decoder (``[E, h1']``) for rows of
            that epoch (``rows`` in :meth:`encode`, :meth:`decode`, :meth:`forward`): one
            network serves every epoch yet each epoch's inputs can take their own region of
            the hidden space. :meth:`export_state` folds one epoch's biases into the first
            layers, so every epoch's export is a plain MLP of the same shape. 0: none.
    """

    def __init__(self, encoder_dims: list[int], decoder_dims: list[int], n_epochs: int = 0) -> None:
        super().__init__()
        if encoder_dims[-1] != decoder_dims[0] or encoder_dims[0] != decoder_dims[-1]:
            raise ValueError(
                f"encoder_dims {encoder_dims} and decoder_dims {decoder_dims} do not chain: "
                "the encoder's output must be the decoder's input and vice versa"
            )
        self.encoder_dims = list(encoder_dims)
        self.decoder_dims = list(decoder_dims)
        self.encoder = mlp(self.encoder_dims)
        self.decoder = mlp(self.decoder_dims)
        self.n_epochs = int(n_epochs)
        if self.n_epochs > 0:
            self.encoder_epoch_bias = nn.Parameter(torch.zeros(self.n_epochs, encoder_dims[1]))
            self.decoder_epoch_bias = nn.Parameter(torch.zeros(self.n_epochs, decoder_dims[1]))

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign=False):
        """:meth:`torch.nn.Module.load_state_dict`, reading older exports' key names too
        (:func:`flat_state_keys`)."""
        return super().load_state_dict(flat_state_keys(state_dict), strict=strict, assign=assign)

    def forward(self, x: Tensor, rows: Tensor | int | None = None) -> tuple[Tensor, Tensor]:
        """``x [B, D]`` -> ``(embedding [B, 2], reconstruction [B, D])``; ``rows``: each row's
        epoch position ``[B]`` (or one for all), used with per-epoch biases."""
        z = self.encode(x, rows)
        return z, self.decode(z, rows)

    def encode(self, x: Tensor, rows: Tensor | int | None = None) -> Tensor:
        """``x [B, D]`` -> ``[B, 2]``, with the epoch biases of ``rows`` when there are any."""
        return self._run(self.encoder, x, "encoder_epoch_bias", rows)

    def decode(self, z: Tensor, rows: Tensor | int | None = None) -> Tensor:
        """``z [B, 2]`` -> ``[B, D]``, with the epoch biases of ``rows`` when there are any."""
        return self._run(self.decoder, z, "decoder_epoch_bias", rows)

    def _run(self, net: nn.Sequential, x: Tensor, bias: str, rows: Tensor | int | None) -> Tensor:
        if self.n_epochs == 0 or rows is None:
            return net(x)
        table = getattr(self, bias)
        # F.embedding, not table[rows]: its backward is several times cheaper on a CPU than
        # indexing's accumulating scatter (0.3 against 1.1 ms for 2,500 rows of 128).
        per_row = table[rows] if isinstance(rows, int) else nn.functional.embedding(rows, table)
        h = net[0](x) + per_row
        for layer in net[1:]:
            h = layer(h)
        return h

    def export_state(
        self,
        shift: Tensor | None = None,
        scale: float | Tensor = 1.0,
        epoch_position: int | None = None,
    ) -> dict:
        """What ``vismodel/{epoch}.pth`` holds, in the original tool's format.

        Args:
            shift: ``[D]`` mean the network's inputs were centred by, or None.
            scale: scalar the centred inputs were divided by.
            epoch_position: whose per-epoch biases to fold in (needed when there are any).

        Returns:
            ``{"state_dict", "encoder_dims", "decoder_dims"}`` for a network that takes and
            returns raw representations: the input normalisation is folded into the first
            encoder layer and the last decoder layer, so the original tool needs no extra step.
        """
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        if self.n_epochs > 0:
            if epoch_position is None:
                raise ValueError("an autoencoder with per-epoch biases exports one epoch at a time")
            for part in ("encoder", "decoder"):
                state[f"{part}.0.bias"] += state.pop(f"{part}_epoch_bias")[epoch_position]
        if shift is not None:
            shift = shift.detach().cpu().to(torch.float32)
            scale = torch.as_tensor(scale, dtype=torch.float32).cpu()
            first = "encoder.0"
            last = f"decoder.{2 * (len(self.decoder_dims) - 2)}"
            w_in, b_in = state[f"{first}.weight"], state[f"{first}.bias"]
            state[f"{first}.weight"] = w_in / scale  # W (x - m) / s = (W / s) x - W m / s
            state[f"{first}.bias"] = b_in - (w_in @ shift) / scale
            state[f"{last}.weight"] = state[f"{last}.weight"] * scale  # s (W h + b) + m
            state[f"{last}.bias"] = state[f"{last}.bias"] * scale + shift
        return {
            "state_dict": state,
            "encoder_dims": self.encoder_dims,
            "decoder_dims": self.decoder_dims,
        }
