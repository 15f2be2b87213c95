"""Subject model of the bundled demo run; copied verbatim into the run folder as ``model.py``.

This file must stay self-contained (torch only): ttvis loads it from a run folder the same
way it loads a user's own ``model.py``.
"""

import torch
from torch import nn


class DigitsMLP(nn.Module):
    """A small classifier for 8x8 digit images.

    Args:
        in_dim: input pixels (64 for scikit-learn's digits).
        hidden_dim: width of the first hidden layer.
        feature_dim: width of the representation ttvis visualizes.
        n_classes: number of output classes.
    """

    def __init__(self, in_dim=64, hidden_dim=128, feature_dim=64, n_classes=10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.ReLU(),
            nn.Linear(hidden_dim, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, in_dim]`` -> representations ``[B, feature_dim]``."""
        return self.body(x)

    def prediction(self, feature: torch.Tensor) -> torch.Tensor:
        """Representations ``[B, feature_dim]`` -> logits ``[B, n_classes]``."""
        return self.head(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.feature(x))
