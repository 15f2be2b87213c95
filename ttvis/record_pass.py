"""The recorder's own pass over the data: every sample's features, raw outputs and label.

One fixed-order pass (train rows, then test rows; no shuffling) over the user's evaluation
datasets, in ``eval()`` mode without gradients; the model's train/eval mode is restored
afterwards, module by module, and torch's global random stream is left untouched. Features
come from a named module (a forward hook, output flattened to ``[B, D]``) or from the model's
``feature()`` method.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset

log = logging.getLogger(__name__)


class RecordError(ValueError):
    """The model, data or settings given to the recorder cannot produce a run folder."""


@dataclass
class PassResult:
    """What one pass over the data gives, rows in dataset order (train rows, then test rows).

    Attributes:
        features: ``[N, D]`` float32.
        predictions: ``[N, C]`` float32, the model's raw outputs.
        labels: ``[N]`` int64.
    """

    features: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray


def find_module(model: nn.Module, name: str) -> tuple[str, nn.Module]:
    """The submodule ``name`` of ``model``: an exact ``named_modules()`` name, or the one name
    that ends with ``.name`` (so ``"avgpool"`` finds ``"net.avgpool"`` inside a wrapper).

    Returns:
        ``(full name, module)``.

    Raises:
        RecordError: no such module, or the suffix is ambiguous; lists candidates.
    """
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return name, modules[name]
    matches = [n for n in modules if n.endswith("." + name)]
    if len(matches) == 1:
        return matches[0], modules[matches[0]]
    if matches:
        raise RecordError(f"feature_layer={name!r} is ambiguous in the model: {matches}")
    names = [n for n in modules if n]
    shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
    raise RecordError(
        f"feature_layer={name!r}: no module of that name in {type(model).__name__} "
        f"(modules: {shown})"
    )


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` and ``torch.no_grad()`` inside; every submodule's own train/eval flag
    restored on leaving (also after an error)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in flags:
            module.training = training


def _to_device(x, device: torch.device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (list, tuple)):
        return type(x)(_to_device(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to_device(v, device) for k, v in x.items()}
    return x


def _split_batch(batch) -> tuple[object, torch.Tensor]:
    if not isinstance(batch, (list, tuple)) or len(batch) < 2:
        raise RecordError(
            f"a dataset item must be (input, label, ...); the loader gave a {type(batch).__name__}"
        )
    labels = torch.as_tensor(batch[1])
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.ndim != 1:
        raise RecordError(
            f"labels must be integer class indices, one per sample; found dtype {labels.dtype}, "
            f"shape {tuple(labels.shape)} per batch"
        )
    return batch[0], labels


class _FeatureSource:
    """Runs the model on a batch and returns ``(features [B, D], outputs [B, C])``."""

    def __init__(self, model: nn.Module, feature_layer: str | None) -> None:
        self.model = model
        self.layer_name = None
        self.layer = None
        if feature_layer is not None:
            self.layer_name, self.layer = find_module(model, feature_layer)
        elif not callable(getattr(model, "feature", None)):
            raise RecordError(
                f"{type(model).__name__} has no feature() method; name the module whose output "
                "is the representation with feature_layer=... (e.g. 'avgpool')"
            )

    def describe(self) -> str:
        """Where the features come from, for the log."""
        if self.layer_name is not None:
            return f"module {self.layer_name!r} (forward hook, flattened)"
        return f"{type(self.model).__name__}.feature()"

    def __call__(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        if self.layer is None:
            features = self.model.feature(x)
            if callable(getattr(self.model, "prediction", None)):
                outputs = self.model.prediction(features)
            else:
                outputs = self.model(x)
        else:
            captured: list[torch.Tensor] = []
            handle = self.layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
            try:
                outputs = self.model(x)
            finally:
                handle.remove()
            if len(captured) != 1 or not isinstance(captured[0], torch.Tensor):
                raise RecordError(
                    f"feature_layer={self.layer_name!r} ran {len(captured)} time(s) per forward "
                    "or returned no tensor; expected exactly one tensor output per forward"
                )
            features = captured[0]
        if not isinstance(outputs, torch.Tensor) or outputs.ndim != 2:
            found = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs)
            raise RecordError(f"the model's output is {found}; expected raw outputs [B, C]")
        return features.flatten(1), outputs


def record_pass(
    model: nn.Module,
    datasets: Sequence[Dataset],
    feature_layer: str | None,
    batch_size: int,
    device: torch.device | str,
    num_workers: int = 0,
) -> PassResult:
    """One pass over ``datasets`` in order, without shuffling, in evaluation mode.

    Args:
        model: any ``nn.Module`` whose output is ``[B, C]``; left in the train/eval mode it
            had, on the device it is on (inputs are moved to ``device``).
        datasets: map-style datasets of ``(input, label, ...)`` items, as given (use the
            evaluation transform); rows of the result follow them in order.
        feature_layer: name of the module whose output is the representation, or None for
            the model's ``feature()`` method.
        batch_size: samples per forward.
        device: where inputs go (the model's device).
        num_workers: ``DataLoader`` worker processes.

    Returns:
        :class:`PassResult`, ``N = sum(len(d) for d in datasets)`` rows.
    """
    source = _FeatureSource(model, feature_layer)
    data = ConcatDataset(list(datasets))
    n = len(data)
    if n == 0:
        raise RecordError("train_data and test_data hold no samples")
    # A private generator: a DataLoader otherwise draws its workers' base seed from torch's
    # global stream, and recording would change what the user's training draws next.
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    features = predictions = None
    labels = np.empty(n, dtype=np.int64)
    row = 0
    with evaluation_mode(model):
        for batch in loader:
            x, y = _split_batch(batch)
            feats, outs = source(_to_device(x, torch.device(device)))
            b = feats.shape[0]
            if features is None:
                features = np.empty((n, feats.shape[1]), dtype=np.float32)
                predictions = np.empty((n, outs.shape[1]), dtype=np.float32)
            features[row : row + b] = feats.float().cpu().numpy()
            predictions[row : row + b] = outs.float().cpu().numpy()
            labels[row : row + b] = y.numpy()
            row += b
    if row != n:
        raise RecordError(f"the datasets report {n} samples but gave {row}")
    return PassResult(features=features, predictions=predictions, labels=labels)
