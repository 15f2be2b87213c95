"""Subject models for tests/test_record.py, in a module of their own so that the recorder can
store them as an importable class path (``record_models:MLPHeadNet``)."""

import lightning as L
import torch
from torch import nn


class MLPHeadNet(nn.Module):
    """A classifier whose head is NOT linear in its features (hidden layer + ReLU), with
    dropout and batch norm so that train and eval mode give different outputs.

    Args:
        in_dim: input width.
        feature_dim: D.
        n_classes: C.
    """

    def __init__(self, in_dim: int = 64, feature_dim: int = 16, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.Dropout(0.5)
        )
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(feature_dim, 32), nn.Tanh(),
                                  nn.Linear(32, n_classes))  # fmt: skip

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> ``[B, feature_dim]``."""
        return self.body(x)

    def prediction(self, feature: torch.Tensor) -> torch.Tensor:
        """``[B, feature_dim]`` -> logits ``[B, n_classes]``."""
        return self.head(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.feature(x))


class NoFeatureNet(nn.Module):
    """Same shape of network without ``feature``/``prediction`` methods: features come from a
    named layer only."""

    def __init__(self, in_dim: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 4, 3), nn.ReLU())
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(4 * 6 * 6, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(x))


class LitMLP(L.LightningModule):
    """A Lightning classifier with ``feature``/``prediction`` methods and saved hparams.

    Args:
        in_dim: input width.
        feature_dim: D.
        n_classes: C.
        lr: SGD learning rate.
    """

    def __init__(self, in_dim: int = 64, feature_dim: int = 16, n_classes: int = 10,
                 lr: float = 0.1) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.body = nn.Sequential(nn.Linear(in_dim, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def feature(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_dim]`` -> ``[B, feature_dim]``."""
        return self.body(x)

    def prediction(self, feature: torch.Tensor) -> torch.Tensor:
        """``[B, feature_dim]`` -> logits ``[B, n_classes]``."""
        return self.head(feature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.feature(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)
