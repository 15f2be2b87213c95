"""The visualizer network: an MLP encoder to 2-D and an MLP decoder back (DESIGN.md §4.4)."""

from __future__ import annotations

from torch import Tensor, nn


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]`` with ReLU between them, none after the last.

    Hidden layers are wrapped as ``Sequential(Linear, ReLU)`` so that state-dict keys match the
    original tool's ``VisModel`` (``encoder.0.0.weight`` ... ``encoder.{L}.weight``).
    """
    if len(dims) < 2:
        raise ValueError(f"an MLP needs at least an input and an output size, got {dims}")
    layers: list[nn.Module] = [
        nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(True))
        for d_in, d_out in zip(dims[:-2], dims[1:-1], strict=True)
    ]
    layers.append(nn.Linear(dims[-2], dims[-1]))
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Encoder ``[B, D] -> [B, 2]`` and decoder ``[B, 2] -> [B, D]``.

    Args:
        encoder_dims: ``[D, h1, ..., 2]``.
        decoder_dims: ``[2, ..., h1, D]``.
    """

    def __init__(self, encoder_dims: list[int], decoder_dims: list[int]) -> None:
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

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, D]`` -> ``(embedding [B, 2], reconstruction [B, D])``."""
        z = self.encoder(x)
        return z, self.decoder(z)

    def export_state(self) -> dict:
        """What ``vismodel/{epoch}.pth`` holds, in the original tool's format."""
        return {
            "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "encoder_dims": self.encoder_dims,
            "decoder_dims": self.decoder_dims,
        }
