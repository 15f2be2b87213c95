"""Record a run with the Lightning callback, then visualize it: a small CNN on scikit-learn's
8x8 digits (no download), end to end in under 2 minutes on a 2-core CPU.

    python examples/digits_lightning.py runs/digits-cnn              # train, record, visualize
    python examples/digits_lightning.py runs/digits-cnn --evaluate   # and measure the quality
    python examples/digits_lightning.py runs/digits-cnn method=timevis  # any train.py override
    python examples/digits_lightning.py runs/digits-cnn --no-visualize  # record only, then:
    python train.py content_path=runs/digits-cnn

The training loader shuffles and augments (random one-pixel shifts); the recorder makes its
own fixed-order pass over the un-augmented train and test sets, in eval mode, after epochs
1, 2, 4 and 8 (``--record``), and writes the run folder ttvis reads. Then it runs
``python train.py content_path=OUT`` with the defaults (plus any overrides given) and prints
where the exports are. Cost and quality are measured in docs/results.md. On a shared machine
set ``OMP_NUM_THREADS``, ``MKL_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` to the free cores.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
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
REPO = Path(__file__).resolve().parents[1]  # train.py and evaluate.py
VIS_NAMES = {"dvi": "DVI", "timevis": "TimeVis"}


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


def record_epochs(record: str | None, n_epochs: int) -> list[int] | None:
    """The epochs ``--record`` names (None: every epoch); by default 1, 2, 4, ... and the last,
    denser where the features change fastest."""
    if record == "all":
        return None
    if record:
        return [int(e) for e in record.split(",")]
    return sorted({2**k for k in range(n_epochs.bit_length()) if 2**k <= n_epochs} | {n_epochs})


def run_script(script: str, args: list[str]) -> None:
    """``python REPO/script ARGS``, its output shown; stops on failure."""
    print(f"$ python {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(REPO / script), *args], check=True)


def visualize(out_dir: Path, overrides: list[str], evaluate: bool) -> Path:
    """``python train.py content_path=OUT_DIR`` with ``overrides``, then optionally
    ``python evaluate.py``; returns the export folder."""
    settings = dict(o.split("=", 1) for o in overrides if "=" in o)
    method = settings.get("method", "dvi")
    vis_name = settings.get("vis_name") or VIS_NAMES[method]
    export = Path(settings.get("output_dir") or out_dir / "visualize" / vis_name)
    run_script("train.py", [f"content_path={out_dir}", *overrides])
    if evaluate:
        where = [f"output_dir={export}"] if "output_dir" in settings else []
        hydra = [o for o in overrides if o.startswith("hydra.")]
        run_script("evaluate.py", [f"content_path={out_dir}", f"vis={vis_name}", *where, *hydra])
    return export


def main(argv: list[str] | None = None) -> Path:
    """Train the CNN for ``--epochs`` epochs, recording the ``--record`` epochs into
    ``out_dir``; then visualize the run (unless ``--no-visualize``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="train.py overrides, e.g. method=timevis")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--record", help="epochs to record, e.g. 1,3,8 or all (default: 1, 2, "
                        "4, ... doubling, and the last)")  # fmt: skip
    parser.add_argument("--samples", type=int, default=None, help="first N digits (all 1797)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="float32", help="representations: float32|float16")
    parser.add_argument("--devices", type=int, default=1, help="CPU processes")
    parser.add_argument("--strategy", default="auto", help="e.g. ddp_spawn with --devices 2")
    parser.add_argument("--no-visualize", dest="visualize", action="store_false")
    parser.add_argument("--evaluate", action="store_true", help="then run evaluate.py")
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    L.seed_everything(args.seed, verbose=False)
    out_dir = args.out_dir.expanduser().resolve()
    train_set, test_set, classes = digits_datasets(args.samples, args.seed)
    epochs = record_epochs(args.record, args.epochs)
    recorder = RecordTrainingDynamics(
        out_dir, train_data=train_set, test_data=test_set, feature_layer="embed",
        classes=classes, dtype=args.dtype, epochs=epochs,
    )  # fmt: skip
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", devices=args.devices, strategy=args.strategy,
        callbacks=[recorder],
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    loader = DataLoader(RandomShift(train_set), batch_size=32, shuffle=True)
    trainer.fit(DigitsCNN(n_classes=len(classes)), loader)
    if args.visualize and trainer.is_global_zero:  # DDP: the other ranks only train
        export = visualize(out_dir, args.overrides, args.evaluate)
        print(f"run folder: {out_dir}\nexports: {export}/projection/{{epoch}}.npy (2-D positions), "
              f"bgimg/{{epoch}}.png (decision regions), scale/{{epoch}}.npy (their box), "
              f"plots/run.gif (the animation)")  # fmt: skip
    return out_dir


if __name__ == "__main__":
    main()
