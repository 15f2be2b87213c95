"""The bundled demo run: a real classifier trained on scikit-learn's digits, saved every epoch.

``build_demo_run`` trains :class:`ttvis.demo_model.DigitsMLP` on the 1,797 8x8 digit images
that ship with scikit-learn (no network) and writes the full run-folder layout of DESIGN.md §1:
``model/{e}.pth``, ``dataset/representation/{e}.npy`` (the 64-d penultimate features),
``dataset/prediction/{e}.npy`` (logits), ``dataset/label/labels.npy``, ``index.json`` (80/20
split), ``config.json`` and ``model.py``. The folder appears atomically: it is built under a
temporary name and renamed when complete.

Command line: ``python -m ttvis.demo OUT_DIR [--epochs 10] [--samples N] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ttvis import demo_model
from ttvis.run import REPRESENTATION_DIR, TrainingRun

log = logging.getLogger(__name__)

DEMO_CLASS = "DigitsMLP"


def build_demo_run(
    out_dir: str | Path,
    n_epochs: int = 10,
    n_samples: int | None = None,
    test_fraction: float = 0.2,
    hidden_dim: int = 128,
    feature_dim: int = 64,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
) -> Path:
    """Train the demo classifier and write its run folder.

    Args:
        out_dir: folder to create; must not exist yet.
        n_epochs: subject training epochs, one saved snapshot each (epochs ``1..n_epochs``).
        n_samples: use the first ``n_samples`` digits (after a seeded shuffle); all 1,797 if None.
        test_fraction: share of samples listed as ``test`` in ``index.json``.
        hidden_dim: first hidden layer width of the classifier.
        feature_dim: D, the representation width.
        batch_size: classifier minibatch size.
        lr: classifier Adam learning rate.
        seed: seeds the shuffle, the split, the initial weights and the minibatch order.

    Returns:
        The created folder.
    """
    from sklearn.datasets import load_digits

    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; the demo generator never overwrites")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    digits = load_digits()
    order = rng.permutation(len(digits.target))
    if n_samples is not None:
        order = order[:n_samples]
    x = (digits.data[order] / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    y = digits.target[order].astype(np.int64)
    n = len(y)
    n_test = int(round(test_fraction * n))
    split = rng.permutation(n)
    test_index, train_index = np.sort(split[:n_test]), np.sort(split[n_test:])

    kwargs = {"in_dim": x.shape[1], "hidden_dim": hidden_dim, "feature_dim": feature_dim}
    kwargs["n_classes"] = int(y.max()) + 1
    # The initial weights are the only draws from torch's global stream (minibatches use
    # batch_gen); fork it so the caller's stream is left as it was: train.py builds the demo
    # inside its own seeded run, and a first build must not change what the visualizer draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = demo_model.DigitsMLP(**kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    x_train, y_train = x_all[train_index], y_all[train_index]
    batch_gen = torch.Generator().manual_seed(seed)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for sub in ("model", REPRESENTATION_DIR, "dataset/prediction", "dataset/label"):
            (tmp / sub).mkdir(parents=True, exist_ok=True)
        np.save(tmp / "dataset/label/labels.npy", y)
        (tmp / "index.json").write_text(
            json.dumps({"train": train_index.tolist(), "test": test_index.tolist()})
        )
        config = {
            "dataset": {
                "taskType": "classification",
                "classes": [str(c) for c in range(kwargs["n_classes"])],
            },
            "subject_model": {"class": DEMO_CLASS, "kwargs": kwargs},
            "source": "ttvis demo: scikit-learn digits, DigitsMLP",
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        (tmp / "model.py").write_text(inspect.getsource(demo_model))

        for epoch in range(1, n_epochs + 1):
            model.train()
            perm = torch.randperm(len(train_index), generator=batch_gen)
            for start in range(0, len(perm), batch_size):
                idx = perm[start : start + batch_size]
                loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            model.eval()
            with torch.no_grad():
                feats = model.feature(x_all)
                logits = model.prediction(feats)
            torch.save(model.state_dict(), tmp / "model" / f"{epoch}.pth")
            np.save(tmp / REPRESENTATION_DIR / f"{epoch}.npy", feats.numpy().astype(np.float32))
            np.save(tmp / "dataset/prediction" / f"{epoch}.npy", logits.numpy().astype(np.float32))
            pred = logits.argmax(1).numpy()
            log.info(
                "demo epoch %d/%d: train acc %.3f, test acc %.3f",
                epoch,
                n_epochs,
                (pred[train_index] == y[train_index]).mean(),
                (pred[test_index] == y[test_index]).mean() if n_test else float("nan"),
            )
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / REPRESENTATION_DIR).is_dir():  # not a concurrent twin: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first; keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_demo_run(cache_dir: str | Path, n_epochs: int = 10, seed: int = 0) -> Path:
    """Return the cached demo run under ``cache_dir``, building it the first time.

    Args:
        cache_dir: folder for ttvis's cached data (``~/.cache/ttvis`` by default, see
            ``conf/config.yaml``).
        n_epochs: subject epochs of the demo.
        seed: demo seed; each (epochs, seed) pair has its own folder.

    Returns:
        ``{cache_dir}/demo-digits-e{n_epochs}-s{seed}``.
    """
    path = Path(cache_dir).expanduser() / f"demo-digits-e{n_epochs}-s{seed}"
    if not (path / REPRESENTATION_DIR).is_dir():
        log.info("Building the demo run (scikit-learn digits, %d epochs) in %s", n_epochs, path)
        build_demo_run(path, n_epochs=n_epochs, seed=seed)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build a demo run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = build_demo_run(
        args.out_dir, n_epochs=args.epochs, n_samples=args.samples, seed=args.seed
    )
    print(TrainingRun(path))


if __name__ == "__main__":
    main()
