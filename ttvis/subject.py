"""The subject head: the classifier's logits for an arbitrary representation (docs/design.md §3).

Backgrounds, prediction preserving and confidence metrics need ``prediction(rep)`` for points
that are not in the data set (decoded grid points, reconstructions). Two sources:

1. ``model.py`` + ``model/{epoch}.pth`` in the run folder: the class is instantiated, its state
   dict loaded with ``weights_only=True`` and its ``prediction`` method called.
   Instead of ``model.py``, ``config.json`` may name an importable class,
   ``{"subject_model": {"import": "package.module:Class", "kwargs": {...}}}`` (what
   :mod:`ttvis.record` writes when the head is not linear in the recorded features).
2. Otherwise, a linear head ``logits = rep @ W + b`` fitted by least squares on the epoch's own
   (representation, prediction) pairs; it is used only when its relative residual is small.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ttvis.inference import batched
from ttvis.run import CONFIG_FILE, RunError, TrainingRun

log = logging.getLogger(__name__)

# The largest relative least-squares residual at which a linear head recovered from
# (representation, prediction) pairs is accepted (conf: export.max_linear_residual).
MAX_LINEAR_RESIDUAL = 1e-3
# A linear head is also accepted when its residual is within this many times the residual
# that rounding the stored representations (e.g. to float16) alone explains.
ROUNDING_MARGIN = 2.0
# A model head whose logits an affine map reproduces this closely (relative residual on probe
# points around the data: as_linear_head) is taken to be that map: a final nn.Linear evaluated in
# float32 leaves about 1e-7, a ReLU, clamp or log that the probes cross far more.
AFFINE_RESIDUAL = 1e-5
AFFINE_PROBE_ROWS = 256  # rows of the data the affine map is checked on, as they are and shaken
AFFINE_PROBE_NOISE = (1.0, 10.0)  # noise sizes of the shaken rows, in units of the data's scale
LINEAR_FITS_KEPT = 256  # recovered linear heads remembered (each D x C floats: 20 KB at 512 x 10)


class SubjectHeadError(RuntimeError):
    """The classifier's head cannot be evaluated for this run."""


class SubjectHead(nn.Module):
    """Maps representations ``[M, D]`` to logits ``[M, C]``; subclasses define :meth:`forward`."""

    def _reference(self) -> torch.Tensor | None:
        """The head's first parameter (or buffer), whose device and dtype it evaluates in."""
        param = next(self.parameters(), None)
        return param if param is not None else next(self.buffers(), None)

    @property
    def device(self) -> torch.device:
        """Where the head evaluates (CPU for a head without tensors)."""
        ref = self._reference()
        return ref.device if ref is not None else torch.device("cpu")

    def predict(self, reps: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
        """Logits ``[M, C]`` for ``reps [M, D]``, in batches, without gradients, on the head's
        device."""
        ref = self._reference()
        device, dtype = (ref.device, ref.dtype) if ref is not None else (reps.device, reps.dtype)
        if reps.shape[0] == 0:
            return torch.zeros(0, 0, device=device)
        return batched(lambda chunk: self(chunk).float(), reps, batch_size, device, dtype)


class LinearHead(SubjectHead):
    """``logits = reps @ weight + bias``, recovered from data by least squares.

    Args:
        weight: ``[D, C]``.
        bias: ``[C]``.
        residual: relative Frobenius residual of the fit on the data it came from.
        rounding: the relative residual that rounding those representations to their stored
            dtype explains by itself (about 1e-3 for float16 at small logit spreads, ~1e-7
            for float32).
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor, residual: float, rounding: float = 0.0
    ) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.residual = residual
        self.rounding = rounding

    def accepts(self, max_linear_residual: float = MAX_LINEAR_RESIDUAL) -> bool:
        """Whether the fit is linear enough: residual below ``max_linear_residual`` plus
        :data:`ROUNDING_MARGIN` times what the stored dtype's rounding explains."""
        return self.residual <= max_linear_residual + ROUNDING_MARGIN * self.rounding

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        return reps @ self.weight + self.bias

    @classmethod
    def fit(cls, reps: np.ndarray, logits: np.ndarray) -> LinearHead:
        """Least-squares fit on ``reps [N, D]`` and ``logits [N, C]`` (float64 internally).

        ``rounding`` is estimated from ``reps``'s own dtype: rounding to nearest leaves an
        error of at most half a unit in the last place, ``|x| * eps / 2``, uniform, so of
        variance ``x**2 * eps**2 / 12`` (an upper bound), carried to the logits by the fitted
        weights.
        """
        eps = float(np.finfo(reps.dtype).eps) if np.issubdtype(reps.dtype, np.floating) else 0.0
        x = np.asarray(reps, dtype=np.float64)
        p = np.asarray(logits, dtype=np.float64)
        # Centre both sides so the bias is solved exactly and the system stays well conditioned.
        x_mean, p_mean = x.mean(0), p.mean(0)
        w, *_ = np.linalg.lstsq(x - x_mean, p - p_mean, rcond=None)
        b = p_mean - x_mean @ w
        scale = np.linalg.norm(p - p_mean) or 1.0
        residual = relative_residual(x @ w + b, p)
        noise_var = (x**2).sum(0) * eps**2 / 12  # [D], summed over samples
        rounding = float(np.sqrt((noise_var * (w**2).sum(1)).sum()) / scale)
        return cls(torch.from_numpy(w).float(), torch.from_numpy(b).float(), residual, rounding)


class ModelHead(SubjectHead):
    """The ``prediction`` method of the user's subject model.

    Args:
        model: the subject model, weights loaded.
        source: ``(model.py path, class name, constructor kwargs)`` it was built from; lets
            the head be pickled into other processes (``ddp_spawn``), which re-import model.py.
    """

    def __init__(self, model: nn.Module, source: tuple[str, str, dict] | None = None) -> None:
        super().__init__()
        # Inference only, however it was built (also when unpickled in another process).
        self.model = model.eval().requires_grad_(False)
        self.source = source

    def forward(self, reps: torch.Tensor) -> torch.Tensor:
        return self.model.prediction(reps)

    def __reduce__(self):
        if self.source is None:
            return super().__reduce__()
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        return (_rebuild_model_head, (*self.source, state))


def as_linear_head(head: SubjectHead, reps: np.ndarray, seed: int = 0) -> SubjectHead:
    """``head`` as a :class:`LinearHead` with its own weights when its logits are an affine
    function of the representations (a classifier whose ``prediction`` is one ``nn.Linear``,
    as a ResNet's or the demo's), else ``head`` itself.

    A linear head can be stacked with other epochs' into one matrix product
    (:class:`~ttvis.modules.EpochHeads`) instead of a loop over the epochs. The weights are read
    off the head at ``0`` and at ``s e_i`` for every dimension ``i`` (``s``: the data's largest
    magnitude), ``D + 1`` evaluations; the affine map is then checked against the head on
    :data:`AFFINE_PROBE_ROWS` rows of ``reps`` and on the same rows shaken by isotropic noise of
    each size in :data:`AFFINE_PROBE_NOISE` (times ``s``). It is kept when its relative
    residual there is at most :data:`AFFINE_RESIDUAL`: a head that bends anywhere within ten
    times the data's scale of the data (a ReLU, a clamp, a log) is not. Non-finite data or
    logits keep the head.

    Args:
        head: one epoch's subject head.
        reps: ``[N, D]`` that epoch's representations (memory-mapped is fine: only the probed
            rows are read).
        seed: picks the probed rows and the noise.

    Returns:
        A :class:`LinearHead` (float32, on the CPU) or ``head`` unchanged.
    """
    if isinstance(head, LinearHead):
        return head
    rng = np.random.default_rng(seed)
    n_rows = min(AFFINE_PROBE_ROWS, reps.shape[0])
    data = np.asarray(reps[np.sort(rng.choice(reps.shape[0], n_rows, replace=False))], np.float32)
    if data.size == 0 or not np.isfinite(data).all():
        return head
    scale = float(np.abs(data).max()) or 1.0
    basis = np.vstack([np.zeros((1, data.shape[1])), scale * np.eye(data.shape[1])])
    at_basis = _logits(head, basis)
    bias = at_basis[0]
    weight = (at_basis[1:] - bias) / scale  # [D, C]
    shaken = [data + rng.normal(0.0, size * scale, data.shape) for size in AFFINE_PROBE_NOISE]
    probe = np.concatenate([data, *shaken]).astype(np.float32)
    logits = _logits(head, probe)
    if not (np.isfinite(logits).all() and np.isfinite(weight).all()):
        return head
    residual = relative_residual(probe @ weight + bias, logits)
    if not residual <= AFFINE_RESIDUAL:
        return head
    return LinearHead(torch.from_numpy(weight).float(), torch.from_numpy(bias).float(), residual)


def relative_residual(fitted: np.ndarray, logits: np.ndarray) -> float:
    """``||fitted - logits|| / ||logits - mean(logits)||`` (Frobenius; a constant ``logits``
    divides by 1): how far an affine map ``fitted [M, C]`` is from ``logits [M, C]``, relative
    to the logits' spread. What :data:`MAX_LINEAR_RESIDUAL` and :data:`AFFINE_RESIDUAL` bound."""
    spread = np.linalg.norm(logits - logits.mean(0)) or 1.0
    return float(np.linalg.norm(fitted - logits) / spread)


def _logits(head: SubjectHead, points: np.ndarray) -> np.ndarray:
    """``head``'s float64 logits ``[M, C]`` of ``points [M, D]`` (evaluated in float32)."""
    x = torch.from_numpy(np.asarray(points, dtype=np.float32))
    return head.predict(x).cpu().numpy().astype(np.float64)


def _import_model_code(path: Path):
    """Import ``model.py`` under a name stable across processes (one import per process)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    name = f"ttvis_subject_model_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise SubjectHeadError(f"{path}: importing it failed: {err!r}") from err
    sys.modules[name] = module
    return module


def _rebuild_model_head(path: str, class_name: str, kwargs: dict, state: dict) -> ModelHead:
    model = getattr(_import_model_code(Path(path)), class_name)(**kwargs)
    model.load_state_dict(state)
    return ModelHead(model, (path, class_name, kwargs))


def _load_state(cls: type, kwargs: dict, state_path: Path) -> nn.Module:
    """``cls(**kwargs)`` with the state dict of ``state_path`` loaded (``weights_only``)."""
    if not state_path.exists():
        raise SubjectHeadError(f"{state_path}: file not found ({cls.__name__} needs it)")
    try:
        model = cls(**kwargs)
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:
        raise SubjectHeadError(f"{state_path}: cannot load into {cls.__name__}: {err}") from err
    return model


def _subject_class(run: TrainingRun) -> tuple[type, dict]:
    """Import ``model.py`` from the run folder and pick the subject class and its kwargs.

    ``config.json`` may name it as ``{"subject_model": {"class": "Net", "kwargs": {...}}}``;
    otherwise the one ``nn.Module`` subclass defined in ``model.py`` with a ``prediction``
    method is used, constructed without arguments.
    """
    path = run.model_code_path
    module = _import_model_code(path)
    config_path = run.content_path / CONFIG_FILE
    wanted, kwargs = None, {}
    if config_path.exists():
        entry = json.loads(config_path.read_text()).get("subject_model") or {}
        wanted, kwargs = entry.get("class"), entry.get("kwargs", {})
    candidates = {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, nn.Module)
        and obj.__module__ == module.__name__
        and callable(getattr(obj, "prediction", None))
    }
    if wanted is not None:
        if wanted not in candidates:
            raise SubjectHeadError(
                f"{config_path}: subject_model.class is {wanted!r}, but {path} defines no "
                f"nn.Module of that name with a prediction() method (found {sorted(candidates)})"
            )
        return candidates[wanted], kwargs
    if len(candidates) != 1:
        raise SubjectHeadError(
            f"{path}: expected exactly one nn.Module class with a prediction() method, found "
            f"{sorted(candidates) or 'none'}; name one in config.json as "
            '{"subject_model": {"class": "...", "kwargs": {...}}}'
        )
    return next(iter(candidates.values())), kwargs


def subject_import_entry(run: TrainingRun) -> tuple[str, dict] | None:
    """``(import path, kwargs)`` from ``config.json``'s ``subject_model.import``, or None.

    The import path is ``"package.module:Class"`` (``"package.module.Class"`` also works).
    """
    path = run.content_path / CONFIG_FILE
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get("subject_model") or {}
    target = entry.get("import") if isinstance(entry, dict) else None
    if target is None:
        return None
    kwargs = entry.get("kwargs", {})
    if not isinstance(target, str) or not isinstance(kwargs, dict):
        raise SubjectHeadError(
            f"{path}: subject_model.import must be a string 'package.module:Class' and "
            f"subject_model.kwargs an object; found {target!r} and {kwargs!r}"
        )
    return target, kwargs


def import_class(target: str, where: str = "subject_model.import") -> type:
    """The class named by ``"package.module:Class"`` or ``"package.module.Class"``.

    Raises:
        SubjectHeadError: naming ``where``, the path and why it did not import.
    """
    module_name, sep, class_name = target.partition(":")
    if not sep:
        module_name, _, class_name = target.rpartition(".")
    try:
        obj = importlib.import_module(module_name)
        for part in class_name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise SubjectHeadError(
            f"{where} is {target!r}, which does not import here ({err}); make its package "
            "importable (pip install -e, PYTHONPATH) or put the class in the run's model.py"
        ) from err
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise SubjectHeadError(f"{where} is {target!r}, which is not an nn.Module class")
    if not callable(getattr(obj, "prediction", None)):
        raise SubjectHeadError(
            f"{where} is {target!r}, which has no prediction(feature) method to map "
            "representations to logits"
        )
    return obj


def load_subject_head(
    run: TrainingRun,
    epoch: int,
    device: torch.device | str = "cpu",
    max_linear_residual: float = MAX_LINEAR_RESIDUAL,
) -> SubjectHead:
    """The subject head of ``epoch``: from ``model.py`` if present, else from the class that
    ``config.json``'s ``subject_model.import`` names, else a fitted linear head.

    Args:
        run: the validated run.
        epoch: subject epoch.
        device: where the head evaluates.
        max_linear_residual: the largest relative least-squares residual accepted for a
            linear head recovered from (representation, prediction) pairs.

    Raises:
        SubjectHeadError: when neither source gives a usable head; the message says why.
    """
    if run.model_code_path.exists():
        cls, kwargs = _subject_class(run)
        state_path = run.model_state_path(epoch)
        if not state_path.exists():
            raise SubjectHeadError(f"{state_path}: file not found (model.py needs it)")
        model = _load_state(cls, kwargs, state_path)
        return ModelHead(model, (str(run.model_code_path), cls.__name__, kwargs)).to(device)

    entry = subject_import_entry(run)
    if entry is not None:
        target, kwargs = entry
        cls = import_class(target, f"{run.content_path / CONFIG_FILE}: subject_model.import")
        return ModelHead(_load_state(cls, kwargs, run.model_state_path(epoch))).to(device)

    logits = run.predictions(epoch)
    if logits is None:
        raise SubjectHeadError(
            f"{run.content_path}: no model.py and no {run.prediction_path(epoch)}; the subject "
            "head needs one of them"
        )
    if run.shape.n_features != 1:
        raise SubjectHeadError(
            f"{run.representation_path(epoch)}: [N, F, D] representations need model.py to "
            "map each feature to a prediction"
        )
    head = _recovered_linear_head(run, epoch, logits)
    if not head.accepts(max_linear_residual):
        raise SubjectHeadError(
            f"epoch {epoch}: predictions are not a linear function of the representations "
            f"(least-squares relative residual {head.residual:.2e} > {max_linear_residual:.0e}"
            f" + {ROUNDING_MARGIN:g} x {head.rounding:.1e} from rounding); "
            f"put the subject model's code in {run.model_code_path} so backgrounds and "
            "prediction metrics can use the real head"
        )
    return head.to(device)


_linear_fits: dict[tuple, LinearHead] = {}  # file stamps -> fitted head (CPU), least recent first


def _recovered_linear_head(run: TrainingRun, epoch: int, logits: np.ndarray) -> LinearHead:
    """A fresh :class:`LinearHead` (CPU) fitted to ``epoch``'s representations ``[N, D]`` and
    ``logits [N, C]``.

    The least-squares fit of a CIFAR-sized epoch (60,000 x 512) takes about a second and the
    training and the export of an epoch each need it, so the :data:`LINEAR_FITS_KEPT` most
    recently used fits are remembered, keyed by each file's path, device, inode, size and
    modification and change times (a rewrite, a copy or a move over it changes the change time).
    """
    files = (run.representation_path(epoch), run.prediction_path(epoch))
    stats = [(str(f), f.stat()) for f in files]
    key = tuple(
        (name, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        for name, st in stats
    )
    fitted = _linear_fits.pop(key, None)
    if fitted is None:
        fitted = LinearHead.fit(run.representations(epoch), logits)
        log.info("epoch %d: linear subject head recovered, residual %.1e", epoch, fitted.residual)
    _linear_fits[key] = fitted
    while len(_linear_fits) > LINEAR_FITS_KEPT:
        _linear_fits.pop(next(iter(_linear_fits)))
    return LinearHead(fitted.weight.clone(), fitted.bias.clone(), fitted.residual, fitted.rounding)


def try_load_subject_head(
    run: TrainingRun, epoch: int, device: torch.device | str = "cpu", **kwargs
) -> SubjectHead | None:
    """:func:`load_subject_head`, but None (with one warning) for runs that cannot have one."""
    if not run.is_classification:
        return None
    try:
        return load_subject_head(run, epoch, device, **kwargs)
    except (SubjectHeadError, RunError) as err:
        log.warning("No subject head: %s. Backgrounds stay white, prediction metrics skipped.", err)
        return None
