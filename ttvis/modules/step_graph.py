"""A training step's forward and backward pass replayed as one CUDA graph (docs/design.md §4.3).

A visualizer's step is a few hundred small kernels (a 4 x 128-wide network, the edge draws,
the losses): on a GPU it waits on their launches, not on their arithmetic. Captured once in a
CUDA graph, the whole forward and backward pass is one launch; the optimizer step, gradient
clipping and the learning-rate schedule stay with Lightning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from torch import Tensor

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, tuple[int, ...], torch.dtype], ...]


def batch_signature(batch: dict[str, Tensor]) -> Signature:
    """The keys, shapes and dtypes of a batch: two batches with one signature can share a
    captured graph."""
    return tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(batch.items()))


class StepGraph:
    """Runs ``losses = compute(batch); losses["total"].backward()`` as one CUDA graph, captured
    on the first batch and replayed for every later batch of the same signature.

    The graph reads the batch from static input tensors (each batch is copied into them),
    writes each parameter's gradient into static tensors (overwritten, not accumulated, by
    each replay) and draws its random numbers from ``generators``, whose states advance with
    each replay as an eager step's would. :meth:`run` returns the losses; the gradients become
    the parameters' ``.grad`` only in :meth:`load_grads`, which the backward hook calls: Lightning
    clears the gradients between the training step and its backward call.

    With parameters off CUDA nothing is captured: :meth:`run` computes the same step eagerly
    and hands its gradients over the same way (the CPU tests exercise that hand-off).

    Args:
        compute: the step's losses ``{name: scalar}`` (with ``"total"``) from a batch
            ``{name: [rows, ...]}``; on CUDA it must not synchronise with the host or change
            shapes with the values of its inputs.
        params: the trained parameters.
        generators: the CUDA generators ``compute`` draws from.
        warmup_steps: eager passes on a side stream before the capture (CUDA's lazy
            initialisations must not happen inside it); their gradients are discarded.
    """

    def __init__(
        self,
        compute: Callable[[dict[str, Tensor]], dict[str, Tensor]],
        params: list[Tensor],
        generators: list[torch.Generator],
        warmup_steps: int = 2,
    ) -> None:
        self.compute, self.params, self.generators = compute, params, generators
        self.warmup_steps = warmup_steps
        self.capture = bool(params) and params[0].is_cuda
        self.signature: Signature | None = None
        self.failed = False  # capture raised: every step runs eagerly
        self.replays = 0  # steps run through run(), replayed (CUDA) or eager (elsewhere)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: dict[str, Tensor] = {}
        self._losses: dict[str, Tensor] = {}
        self._grads: list[Tensor | None] = []

    def run(self, batch: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """The batch's losses, with its gradients held for :meth:`load_grads`; None when the
        batch does not fit the graph (another signature) or the capture failed: the caller
        then runs the step eagerly. Leaves every ``.grad`` None."""
        if self.failed:
            return None
        if not self.capture:
            return self._run_eagerly(batch)
        if self._graph is None:
            try:
                self._capture(batch)
            except RuntimeError as error:  # an operation that cannot be captured: run eagerly
                self.failed, self._graph = True, None
                self._clear_grads()
                log.warning("CUDA graph capture failed (%s); training steps run eagerly", error)
                return None
        elif batch_signature(batch) != self.signature:
            return None
        # The last step's .grad are this graph's buffers: let go of them before the replay
        # writes them, so that nothing done to .grad before load_grads (a zero_grad that
        # zeroes in place) reaches the new gradients.
        self._clear_grads()
        for name, value in batch.items():
            self._inputs[name].copy_(value)
        self._graph.replay()
        self.replays += 1
        return self._losses

    def load_grads(self) -> None:
        """Make the last :meth:`run`'s gradients the parameters' ``.grad``."""
        for p, grad in zip(self.params, self._grads, strict=True):
            p.grad = grad

    def _run_eagerly(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self._clear_grads()
        losses = self.compute(batch)
        losses["total"].backward()
        self._grads = [p.grad for p in self.params]
        self._clear_grads()
        self.replays += 1
        return {k: v.detach() for k, v in losses.items()}

    def _capture(self, batch: dict[str, Tensor]) -> None:
        self.signature = batch_signature(batch)
        self._inputs = {k: v.clone() for k, v in batch.items()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup_steps):
                self._clear_grads()
                self.compute(self._inputs)["total"].backward()
        torch.cuda.current_stream().wait_stream(side)
        self._clear_grads()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            losses = self.compute(self._inputs)
            losses["total"].backward()
        self._losses = {k: v.detach() for k, v in losses.items()}
        self._grads = [p.grad for p in self.params]
        self._clear_grads()
        self._graph = graph

    def _clear_grads(self) -> None:
        for p in self.params:
            p.grad = None


class GraphedSteps:
    """LightningModule mixin: training steps run through a :class:`StepGraph` on one CUDA
    device. The module provides ``step_losses(batch) -> {name: scalar}`` (with ``"total"``),
    ``autoencoder`` (the trained parameters) and ``_generator`` (the CUDA generator the step
    draws from); its ``training_step`` asks :meth:`_graphed_losses` first and computes
    ``step_losses`` itself when that says None."""

    def _init_step_graph(self, enabled: bool) -> None:
        self.step_graph = bool(enabled)
        self._step_graph: StepGraph | None = None  # captured on the first CUDA step of a fit
        self._graphed_step = False  # this step's gradients wait in the graph for backward

    def _release_step_graph(self) -> None:
        """Drop the captured graph and its memory pool (a new fit captures its own)."""
        self._step_graph = None

    def _step_graph_applies(self) -> bool:
        """Whether this step runs through the graph: ``step_graph`` on, a CUDA device
        (:meth:`_on_graph_device`), and a Trainer (if any) that leaves the gradients to the
        step: one device in one process (DDP averages gradients inside the backward pass),
        32-bit precision, no gradient accumulation (its backward calls add to ``.grad``)."""
        if not (self.step_graph and self._on_graph_device() and torch.is_grad_enabled()):
            return False
        if self._trainer is None:
            return True
        trainer = self.trainer
        return (
            isinstance(trainer.strategy, SingleDeviceStrategy)
            and str(trainer.precision) in ("32-true", "32")
            and trainer.accumulate_grad_batches == 1
        )

    def _on_graph_device(self) -> bool:
        """Whether the module is on a device whose steps are captured (CUDA)."""
        return self.device.type == "cuda"

    def _graphed_losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor] | None:
        """The step's losses from the graph of ``step_losses`` and its backward pass (the
        gradients follow in :meth:`backward`), or None where the step runs eagerly: the graph
        does not apply (:meth:`_step_graph_applies`) or the batch has another shape (an
        epoch's last, shorter one)."""
        self._graphed_step = False
        if not self._step_graph_applies():
            return None
        if self._step_graph is None:
            params = list(self.autoencoder.parameters())
            self._step_graph = StepGraph(self.step_losses, params, [self._generator])
        losses = self._step_graph.run(batch)
        self._graphed_step = losses is not None
        return losses

    def backward(self, loss: Tensor, *args, **kwargs) -> None:
        """Lightning's backward hook: a graphed step's gradients are already computed and
        become ``.grad`` here (after Lightning cleared the previous ones)."""
        if self._graphed_step:
            self._step_graph.load_grads()
            return
        super().backward(loss, *args, **kwargs)

    def on_train_end(self) -> None:
        self._release_step_graph()  # frees the graph's memory pool; exports run eagerly
        super().on_train_end()
