"""What recording costs: extra seconds per epoch on the demo, bytes per epoch at CIFAR size.

    python benchmarks/record_cost.py [--epochs 10]

1. Trains the demo classifier (``ttvis.demo_model.DigitsMLP`` on the 1,797 digits, the demo's
   settings) epoch by epoch and records each epoch with :class:`ttvis.record.Recorder`;
   prints the median training epoch, the median extra time of a recording and the bytes it
   wrote per epoch.
2. CIFAR-10 size (60,000 samples x 512 float32 features, 10 outputs, a ResNet-18): writes one
   epoch's files the way the recorder does (atomically) and prints their sizes and the
   writing time (the forward pass over 60,000 images is the user's model's cost and not
   measured here).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ttvis.demo_model import DigitsMLP
from ttvis.export import atomic_save_npy, atomic_torch_save
from ttvis.record import Recorder

DEMO = {"batch_size": 32, "lr": 2e-3, "test_fraction": 0.2}
CIFAR = {"n_samples": 60_000, "dim": 512, "n_classes": 10}
MB = 1e6


def folder_bytes(folder: Path, epoch: int) -> int:
    """Bytes of one epoch's files (model, representation, prediction) under ``folder``."""
    paths = [f"model/{epoch}.pth", f"dataset/representation/{epoch}.npy"]
    paths.append(f"dataset/prediction/{epoch}.npy")
    return sum((folder / p).stat().st_size for p in paths)


def demo_cost(n_epochs: int, workdir: Path) -> None:
    """Train + record the demo; print median seconds and bytes per epoch."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.data / 16.0).float()
    y = torch.from_numpy(digits.target).long()
    n_test = int(round(DEMO["test_fraction"] * len(y)))
    train, test = TensorDataset(x[n_test:], y[n_test:]), TensorDataset(x[:n_test], y[:n_test])
    torch.manual_seed(0)
    model = DigitsMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=DEMO["lr"])
    recorder = Recorder(workdir / "demo", model, train_data=train, test_data=test)
    loader = DataLoader(train, batch_size=DEMO["batch_size"], shuffle=True)
    train_s = []
    for epoch in range(1, n_epochs + 1):
        start = time.perf_counter()
        model.train()
        for xb, yb in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
        train_s.append(time.perf_counter() - start)
        recorder.save(epoch)
    record_s = list(recorder.seconds.values())
    print(f"demo ({len(y)} samples, {n_epochs} epochs): training epoch median "
          f"{statistics.median(train_s):.3f} s; recording median {statistics.median(record_s):.3f}"
          f" s (first {record_s[0]:.3f} s, max {max(record_s):.3f} s); "
          f"{folder_bytes(workdir / 'demo', n_epochs) / MB:.2f} MB per epoch")  # fmt: skip


def basic_block(cin: int, cout: int, stride: int) -> nn.Module:
    """ResNet basic block (two 3x3 convolutions, batch norm, projection shortcut if needed)."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
            )  # fmt: skip
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                           nn.BatchNorm2d(cout))  # fmt: skip

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    return Block()


def resnet18(n_classes: int) -> nn.Module:
    """The CIFAR ResNet-18 (64-128-256-512, two blocks each, 512-d pooled features)."""
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [basic_block(cin, cout, stride), basic_block(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, n_classes)]
    return nn.Sequential(*layers)


def cifar_bytes(workdir: Path) -> None:
    """Write one CIFAR-size epoch atomically; print sizes and seconds."""
    n, d, c = CIFAR["n_samples"], CIFAR["dim"], CIFAR["n_classes"]
    rng = np.random.default_rng(0)
    arrays = {
        "representation float32": rng.standard_normal((n, d), dtype=np.float32),
        "prediction float32": rng.standard_normal((n, c), dtype=np.float32),
    }
    arrays["representation float16"] = arrays["representation float32"].astype(np.float16)
    sizes = {}
    start = time.perf_counter()
    for name, arr in arrays.items():
        path = workdir / f"{name.replace(' ', '_')}.npy"
        atomic_save_npy(path, arr)
        sizes[name] = path.stat().st_size
    atomic_torch_save(workdir / "model.pth", resnet18(c).state_dict())
    seconds = time.perf_counter() - start
    sizes["model (ResNet-18 state dict)"] = (workdir / "model.pth").stat().st_size
    for name, size in sizes.items():
        print(f"CIFAR size: {name}: {size / MB:.1f} MB")
    per_epoch = sizes["representation float32"] + sizes["prediction float32"]
    per_epoch += sizes["model (ResNet-18 state dict)"]
    half = per_epoch - sizes["representation float32"] + sizes["representation float16"]
    print(f"CIFAR size: per epoch {per_epoch / MB:.1f} MB with float32 features, "
          f"{half / MB:.1f} MB with float16; writing took {seconds:.2f} s")  # fmt: skip


def main() -> None:
    """Command-line entry."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        demo_cost(args.epochs, Path(tmp))
        cifar_bytes(Path(tmp))


if __name__ == "__main__":
    main()
