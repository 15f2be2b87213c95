"""The bundled demo runs: real classifiers trained on real data, saved every epoch.

``build_demo_run`` trains :class:`ttvis.demo_model.DigitsMLP` on one of two data sets that need
no network: the 1,797 8x8 digit images that ship with scikit-learn (``data="digits"``), or
MNIST-1D (``data="mnist1d"``, 6,000 procedurally generated 40-sample signals, a harder task:
an MLP reaches about 60-70%; needs ``pip install mnist1d``), with one of several training
recipes (:data:`RECIPES`: Adam; SGD with momentum, whose first epochs' features are several
times smaller than later ones; a wide network at a high rate, whose features change fast).
Together they are the family of runs ttvis's defaults are tuned and judged on. The run folder
(docs/design.md §1) is written by :class:`ttvis.record.Recorder`, the same writer users call:
``model/{e}.pth``, ``dataset/representation/{e}.npy`` (the 64-d penultimate features),
``dataset/prediction/{e}.npy`` (logits), ``dataset/label/labels.npy``, ``index.json`` (an 80/20
seeded split; rows are the training samples, then the test samples) and ``config.json``; the
demo adds ``model.py`` and ``config.json``'s ``subject_model``. The folder appears atomically:
it is built under a temporary name and renamed when complete.

Command line: ``python -m ttvis.demo OUT_DIR [--data digits|mnist1d] [--recipe adam|sgd|wide]
[--epochs 10] [--samples N] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ttvis import demo_model
from ttvis.record import Recorder
from ttvis.run import REPRESENTATION_DIR, TrainingRun

log = logging.getLogger(__name__)

DEMO_CLASS = "DigitsMLP"
DATASETS = ("digits", "mnist1d")
MNIST1D_SAMPLES = 6000  # MNIST-1D's generator default is 5,000; 4,800 train + 1,200 test


@dataclass(frozen=True)
class Recipe:
    """How the demo classifier is trained.

    Attributes:
        optimizer: ``"adam"`` or ``"sgd"`` (with ``momentum``).
        lr: learning rate.
        momentum: SGD momentum (ignored by Adam).
        batch_size: classifier minibatch size.
        hidden_dim: width of the first hidden layer.
    """

    optimizer: str
    lr: float
    momentum: float = 0.0
    batch_size: int = 32
    hidden_dim: int = 128


RECIPES = {
    "adam": Recipe("adam", lr=2e-3),
    # Small steps from a small start: epoch 1's features are several times smaller than later
    # epochs' (the case one input normalisation for all epochs handles worst).
    "sgd": Recipe("sgd", lr=0.01, momentum=0.9, batch_size=64),
    # Four times wider at a high rate: neighbourhoods change fast between epochs.
    "wide": Recipe("adam", lr=1e-2, batch_size=64, hidden_dim=512),
}


def load_demo_data(
    data: str, seed: int, n_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The demo's inputs and labels, before the seeded shuffle.

    Args:
        data: ``"digits"`` (scikit-learn's 1,797 8x8 images, pixels scaled to 0..1) or
            ``"mnist1d"`` (:data:`MNIST1D_SAMPLES` MNIST-1D signals of 40 samples, or
            ``n_samples`` when more, generated with ``seed``; needs the ``mnist1d`` package).
        seed: MNIST-1D's generator seed (digits are fixed).
        n_samples: samples wanted; MNIST-1D generates more than its default for more.

    Returns:
        ``(x [N, F] float32, y [N] int64)``.
    """
    if data == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
    if data == "mnist1d":
        try:
            from mnist1d.data import get_dataset_args, make_dataset
        except ImportError as err:
            raise ImportError(
                "data='mnist1d' needs the mnist1d package: pip install mnist1d "
                "(or pip install -e '.[bench]')"
            ) from err
        args = get_dataset_args()
        args.num_samples, args.seed = max(MNIST1D_SAMPLES, n_samples or 0), seed
        # Its generator seeds numpy's global stream: leave the caller's as it was.
        state = np.random.get_state()  # noqa: NPY002
        try:
            made = make_dataset(args)
        finally:
            np.random.set_state(state)  # noqa: NPY002
        x = np.concatenate([made["x"], made["x_test"]]).astype(np.float32)
        y = np.concatenate([made["y"], made["y_test"]]).astype(np.int64)
        return x, y
    raise ValueError(f"data={data!r}: expected one of {', '.join(DATASETS)}")


def shuffle_and_split(
    x: np.ndarray, y: np.ndarray, n_samples: int | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A seeded shuffle (the first ``n_samples`` kept; all if None) and train/test split.

    Returns:
        ``(x [N, F], y [N], train_index, test_index)``, the indices sorted rows of ``x``.
    """
    if n_samples is not None and not 1 <= n_samples <= len(y):
        raise ValueError(f"--samples {n_samples}: expected 1..{len(y)}, the data's sample count")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    if n_samples is not None:
        order = order[:n_samples]
    n_test = int(round(test_fraction * len(order)))
    split = rng.permutation(len(order))
    return x[order], y[order], np.sort(split[n_test:]), np.sort(split[:n_test])


def train_one_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
) -> None:
    """One pass of cross-entropy minibatch training over ``x [N, F]``, ``y [N]`` in an order
    drawn from ``generator``."""
    model.train()
    perm = torch.randperm(len(y), generator=generator)
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def new_classifier(
    kwargs: dict, plan: Recipe, lr: float, seed: int
) -> tuple[demo_model.DigitsMLP, torch.optim.Optimizer]:
    """The demo classifier with seeded initial weights, and its optimizer."""
    # The initial weights are the only draws from torch's global stream (minibatches use
    # their own generator); fork it so the caller's stream is left as it was: train.py builds
    # the demo inside its own seeded run, and a first build must not change what it draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = demo_model.DigitsMLP(**kwargs)
    if plan.optimizer == "sgd":
        return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=plan.momentum)
    return model, torch.optim.Adam(model.parameters(), lr=lr)


@contextlib.contextmanager
def building(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside ``out_dir``, renamed to ``out_dir`` when the block completes
    and removed when it fails. A concurrent twin that finished first is kept."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if not (out_dir / REPRESENTATION_DIR).is_dir():  # not a concurrent twin: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished first; keep theirs
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_demo_run(
    out_dir: str | Path,
    n_epochs: int = 10,
    n_samples: int | None = None,
    test_fraction: float = 0.2,
    data: str = "digits",
    recipe: str = "adam",
    hidden_dim: int | None = None,
    feature_dim: int = 64,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
) -> Path:
    """Train the demo classifier and write its run folder.

    Args:
        out_dir: folder to create; must not exist yet.
        n_epochs: subject training epochs, one saved snapshot each (epochs ``1..n_epochs``).
        n_samples: use the first ``n_samples`` samples (after a seeded shuffle); all if None
            (MNIST-1D generates as many as asked, at least its default).
        test_fraction: share of samples listed as ``test`` in ``index.json``.
        data: ``"digits"`` or ``"mnist1d"`` (:func:`load_demo_data`).
        recipe: a key of :data:`RECIPES`: optimizer, rate, minibatch and width.
        hidden_dim: first hidden layer width; None: the recipe's.
        feature_dim: D, the representation width.
        batch_size: classifier minibatch size; None: the recipe's.
        lr: classifier learning rate; None: the recipe's.
        seed: seeds the data (MNIST-1D), the shuffle, the split, the initial weights and the
            minibatch order.

    Returns:
        The created folder.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r}: expected one of {', '.join(RECIPES)}")
    given = {"hidden_dim": hidden_dim, "batch_size": batch_size, "lr": lr}
    plan = replace(RECIPES[recipe], **{k: v for k, v in given.items() if v is not None})
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; the demo generator never overwrites")
    x_raw, y_raw = load_demo_data(data, seed, n_samples)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    x, y, train_index, test_index = shuffle_and_split(x_raw, y_raw, n_samples, test_fraction, seed)
    source = f"ttvis demo: {data}, DigitsMLP, recipe {recipe} ({RECIPES[recipe]})"
    with building(out_dir) as tmp:
        record_demo(tmp, x, y, (train_index, test_index), plan, feature_dim, n_epochs, seed, source)
    return out_dir


def record_demo(
    out_dir: Path,
    x: np.ndarray,
    y: np.ndarray,
    split: tuple[np.ndarray, np.ndarray],
    plan: Recipe,
    feature_dim: int,
    n_epochs: int,
    seed: int,
    source: str,
) -> None:
    """Train the demo classifier on ``x [N, F]``, ``y [N]`` and record every epoch into the
    empty folder ``out_dir`` with :class:`~ttvis.record.Recorder`.

    Args:
        split: ``(train_index, test_index)`` rows of ``x``.
        plan: the recipe, overrides applied.
        feature_dim: D, the representation width.
        n_epochs: epochs ``1..n_epochs``, each recorded.
        seed: seeds the initial weights and the minibatch order.
        source: ``config.json``'s ``source`` line.
    """
    train_index, test_index = split
    kwargs = {"in_dim": x.shape[1], "hidden_dim": plan.hidden_dim, "feature_dim": feature_dim}
    kwargs["n_classes"] = int(y.max()) + 1
    classes = [str(c) for c in range(kwargs["n_classes"])]
    model, optimizer = new_classifier(kwargs, plan, plan.lr, seed)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    x_train, y_train = x_all[train_index], y_all[train_index]
    batch_gen = torch.Generator().manual_seed(seed)
    # The demo's own entries first; the recorder merges its layout into config.json.
    config = {"dataset": {"classes": classes}, "subject_model": {"class": DEMO_CLASS}}
    config["subject_model"]["kwargs"] = kwargs
    config["source"] = source
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "model.py").write_text(inspect.getsource(demo_model))
    recorder = Recorder(
        out_dir,
        model,
        train_data=TensorDataset(x_train, y_train),
        test_data=TensorDataset(x_all[test_index], y_all[test_index]) if len(test_index) else None,
        classes=classes,
        batch_size=len(y),  # one forward over every sample, as the demo always did
    )
    for epoch in range(1, n_epochs + 1):
        train_one_epoch(model, optimizer, x_train, y_train, plan.batch_size, batch_gen)
        recorder.save(epoch)


def demo_run_name(data: str = "digits", recipe: str = "adam", n_epochs: int = 10, seed: int = 0):
    """Folder name of a cached demo run: ``demo-{data}[-{recipe}]-e{n_epochs}-s{seed}`` (the
    default recipe, Adam, is left out)."""
    tag = data if recipe == "adam" else f"{data}-{recipe}"
    return f"demo-{tag}-e{n_epochs}-s{seed}"


def ensure_demo_run(
    cache_dir: str | Path,
    n_epochs: int = 10,
    seed: int = 0,
    data: str = "digits",
    recipe: str = "adam",
) -> Path:
    """Return the cached demo run under ``cache_dir``, building it the first time.

    Args:
        cache_dir: folder for ttvis's cached data (``~/.cache/ttvis`` by default, see
            ``conf/config.yaml``).
        n_epochs: subject epochs of the demo.
        seed: demo seed.
        data: ``"digits"`` or ``"mnist1d"``.
        recipe: a key of :data:`RECIPES`.

    Returns:
        ``{cache_dir}/{demo_run_name(data, recipe, n_epochs, seed)}``.
    """
    path = Path(cache_dir).expanduser() / demo_run_name(data, recipe, n_epochs, seed)
    if not (path / REPRESENTATION_DIR).is_dir():
        log.info(
            "Building the demo run (%s, recipe %s, %d epochs) in %s", data, recipe, n_epochs, path
        )
        build_demo_run(path, n_epochs=n_epochs, seed=seed, data=data, recipe=recipe)
    return path


def main(argv: list[str] | None = None) -> None:
    """Command-line entry: build a demo run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--data", choices=DATASETS, default="digits")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="adam")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = build_demo_run(
            args.out_dir,
            n_epochs=args.epochs,
            n_samples=args.samples,
            data=args.data,
            recipe=args.recipe,
            seed=args.seed,
        )
    except (ValueError, FileExistsError) as err:
        parser.error(str(err))  # one line and exit status 2, nothing written
    print(TrainingRun(path))


if __name__ == "__main__":
    main()
