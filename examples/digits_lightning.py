"""Record a run with the Lightning callback: a small CNN on scikit-learn's 8x8 digits.

    python examples/digits_lightning.py runs/digits-cnn --epochs 8
    python train.py content_path=runs/digits-cnn          # then visualize it (DVI)

The training loader shuffles and augments (random one-pixel shifts); the recorder makes its
own fixed-order pass over the un-augmented train and test sets, in eval mode, after every
epoch, and writes the run folder ttvis reads. Runs on a CPU in seconds (no download).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ttvis.record import RecordTrainingDynamics

PIXEL_MAX = 16.0  # scikit-learn's digits are 0..16 intensities
TEST_FRACTION = 0.2
MAX_SHIFT = 1  # pixels, training augmentation only


class DigitsCNN(L.LightningModule):
    """Conv features -> ``embed`` (the representation, ``[B, feature_dim]``) -> linear head.

    Args:
        channels: width of the first convolution.
        feature_dim: D, the recorded representation's width.
        n_classes: C.
        lr: Adam learning rate.
    """

    def __init__(self, channels: int = 16, feature_dim: int = 32, n_classes: int = 10,
                 lr: float = 3e-3) -> None:  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),
        )  # fmt: skip
        flat = 2 * channels * 4 * 4  # channels x 4 x 4 after pooling 8x8 images
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(flat, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, 8, 8]`` -> logits ``[B, C]``."""
        return self.head(self.embed(self.conv(x)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class RandomShift(Dataset):
    """Training augmentation: each image rolled by up to ``MAX_SHIFT`` pixels each way."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        dx, dy = torch.randint(-MAX_SHIFT, MAX_SHIFT + 1, (2,)).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(1, 2)), y


def digits_datasets(n_samples: int | None = None, seed: int = 0):
    """Train and test sets of ``(image [1, 8, 8] float32 in 0..1, label int64)``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))[:n_samples]
    x = torch.from_numpy(digits.images[order] / PIXEL_MAX).float().unsqueeze(1)
    y = torch.from_numpy(digits.target[order]).long()
    n_test = int(round(TEST_FRACTION * len(y)))
    train, test = TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test])
    return train, test, [str(c) for c in digits.target_names]


def main(argv: list[str] | None = None) -> Path:
    """Train the CNN for ``--epochs`` epochs, recording every epoch into ``out_dir``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--samples", type=int, default=None, help="first N digits (all 1797)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="representations: float32|float16")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes")
    parser.add_argument("--strategy", default="auto", help="e.g. ddp_spawn with --devices 2")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    L.seed_everything(args.seed, verbose=False)
    train_set, test_set, classes = digits_datasets(args.samples, args.seed)
    recorder = RecordTrainingDynamics(
        args.out_dir, train_data=train_set, test_data=test_set, feature_layer="embed",
        classes=classes, dtype=args.dtype,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=args.devices, strategy=args.strategy,
        callbacks=[recorder],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    loader = DataLoader(RandomShift(train_set), batch_size=32, shuffle=True)
    trainer.fit(DigitsCNN(n_classes=len(classes)), loader)
    return args.out_dir


if __name__ == "__main__":
    main()
