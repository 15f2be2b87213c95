"""The subject head: least-squares linear recovery and the run's own model.py."""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import copy_run

from ttvis.run import TrainingRun
from ttvis.subject import (
    LinearHead,
    ModelHead,
    SubjectHeadError,
    as_linear_head,
    load_subject_head,
    try_load_subject_head,
)


def test_linear_head_recovers_exact_linear_map():
    rng = np.random.default_rng(0)
    reps = rng.normal(size=(200, 6)) * 3 + 5  # off-centre, to need the bias
    w, b = rng.normal(size=(6, 4)), rng.normal(size=4) * 10
    logits = reps @ w + b
    head = LinearHead.fit(reps, logits)
    assert head.residual < 1e-10
    np.testing.assert_allclose(head.weight.numpy(), w, atol=1e-5)
    np.testing.assert_allclose(head.bias.numpy(), b, atol=1e-4)
    out = head.predict(torch.from_numpy(reps).float(), batch_size=64)  # several batches
    assert out.shape == (200, 4)
    np.testing.assert_allclose(out.numpy(), logits, rtol=1e-4, atol=1e-3)


def test_linear_head_reports_large_residual_for_nonlinear_map():
    rng = np.random.default_rng(1)
    reps = rng.normal(size=(300, 5))
    logits = np.tanh(reps @ rng.normal(size=(5, 3))) ** 2 + np.abs(reps[:, :3])
    head = LinearHead.fit(reps, logits)
    assert head.residual > 0.2


class _Classifier(torch.nn.Module):
    """A subject model whose ``prediction`` is ``head`` (the user's ``model.py`` shape)."""

    def __init__(self, head) -> None:
        super().__init__()
        self.head = head

    def prediction(self, feature: torch.Tensor) -> torch.Tensor:
        return self.head(feature)


def test_affine_model_head_becomes_linear_head_with_its_own_weights(demo_run):
    run = TrainingRun(demo_run)
    model_head = load_subject_head(run, 3)
    head = as_linear_head(model_head, run.representations(3))
    assert isinstance(head, LinearHead)
    layer = model_head.model.head  # the demo classifier's final nn.Linear
    np.testing.assert_allclose(head.weight.numpy(), layer.weight.T.numpy(), atol=1e-5)
    np.testing.assert_allclose(head.bias.numpy(), layer.bias.numpy(), atol=1e-5)
    far = torch.randn(300, run.shape.dim, generator=torch.Generator().manual_seed(0)) * 10
    torch.testing.assert_close(head.predict(far), model_head.predict(far), rtol=1e-4, atol=1e-4)


def test_linear_head_has_the_weights_of_dimensions_the_data_leave_at_zero():
    rng = np.random.default_rng(2)
    reps = np.abs(rng.normal(size=(500, 8))).astype(np.float32)
    reps[:, :3] = 0  # dead units: the data alone cannot determine these weights
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 4)
    head = as_linear_head(ModelHead(_Classifier(layer)), reps)
    assert isinstance(head, LinearHead)
    np.testing.assert_allclose(head.weight.numpy(), layer.weight.detach().T.numpy(), atol=1e-5)
    x = torch.ones(2, 8)  # nonzero in the dead dimensions, as decoded points are
    torch.testing.assert_close(head.predict(x), layer(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "bend",
    [
        lambda y: y + 1e-3 * torch.relu(y),  # a kink 1,000 times smaller than the logits
        lambda y: y.clamp(-8.0, 8.0),  # affine on the data, flat beyond
        lambda y: torch.log1p(y.abs()),  # and it sends nothing non-finite
    ],
    ids=["small-kink", "clamp", "log"],
)
def test_model_head_that_bends_near_the_data_stays_a_model_head(bend):
    torch.manual_seed(0)
    reps = np.abs(np.random.default_rng(3).normal(size=(400, 16))).astype(np.float32)
    layer = torch.nn.Linear(16, 5)
    model_head = ModelHead(_Classifier(lambda x: bend(layer(x))))
    assert as_linear_head(model_head, reps) is model_head


def test_model_head_with_non_finite_logits_or_data_stays_a_model_head():
    torch.manual_seed(0)
    reps = np.abs(np.random.default_rng(4).normal(size=(300, 6))).astype(np.float32)
    layer = torch.nn.Linear(6, 3)
    sqrt_head = ModelHead(_Classifier(lambda x: layer(torch.sqrt(x))))  # NaN off the data
    assert as_linear_head(sqrt_head, reps) is sqrt_head
    linear_head = ModelHead(_Classifier(layer))
    assert isinstance(as_linear_head(linear_head, reps), LinearHead)
    linear = LinearHead.fit(reps[:4], reps[:4, :3])
    reps[:, 2] = np.nan  # in every row, so in every probed one
    assert as_linear_head(linear_head, reps) is linear_head
    assert as_linear_head(linear, reps) is linear  # linear already: unchanged


def _stored(run: TrainingRun, epoch: int) -> tuple[torch.Tensor, np.ndarray]:
    reps = torch.from_numpy(np.array(run.representations(epoch), dtype=np.float32))
    return reps, np.asarray(run.predictions(epoch))


def test_model_head_reproduces_stored_predictions(demo_run):
    run = TrainingRun(demo_run)
    assert run.model_code_path.exists()
    for epoch in run.epochs:
        head = load_subject_head(run, epoch)
        assert isinstance(head, ModelHead)
        reps, stored = _stored(run, epoch)
        np.testing.assert_allclose(head.predict(reps).numpy(), stored, rtol=1e-4, atol=1e-5)
    # Different epochs are different heads.
    h1, h3 = load_subject_head(run, 1), load_subject_head(run, 3)
    reps, _ = _stored(run, 3)
    assert not torch.allclose(h1.predict(reps), h3.predict(reps))


def test_without_model_code_falls_back_to_linear_head(demo_run, tmp_path):
    path = copy_run(demo_run, tmp_path / "run")
    (path / "model.py").unlink()
    run = TrainingRun(path)
    for epoch in run.epochs:
        head = load_subject_head(run, epoch)
        assert isinstance(head, LinearHead)
        assert head.residual < 1e-4  # the demo's last layer is linear
        reps, stored = _stored(run, epoch)
        np.testing.assert_allclose(head.predict(reps).numpy(), stored, rtol=1e-3, atol=1e-3)


def test_recovered_linear_head_is_fitted_once_per_epoch_files(demo_run, tmp_path, caplog):
    """Training and export of an epoch share one least-squares fit, each getting its own head;
    new prediction files are fitted afresh."""
    path = copy_run(demo_run, tmp_path / "run")
    (path / "model.py").unlink()
    run = TrainingRun(path)
    with caplog.at_level(logging.INFO, logger="ttvis.subject"):
        first, second = load_subject_head(run, 2), load_subject_head(run, 2)
    assert caplog.text.count("epoch 2: linear subject head recovered") == 1
    assert first is not second and first.weight.data_ptr() != second.weight.data_ptr()
    torch.testing.assert_close(first.weight, second.weight, rtol=0, atol=0)
    assert first.device == torch.device("cpu")

    pred_file = run.prediction_path(2)
    reps, _ = _stored(run, 2)
    changed = (reps.numpy() @ np.eye(reps.shape[1], 3)).astype(np.float32) + 1.0
    np.save(pred_file, changed)  # new file: new size and time
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ttvis.subject"):
        refitted = load_subject_head(run, 2)
    assert "epoch 2: linear subject head recovered" in caplog.text
    np.testing.assert_allclose(refitted.predict(reps).numpy(), changed, rtol=1e-3, atol=1e-3)


def test_nonlinear_predictions_without_model_code_raise(demo_run, tmp_path, caplog):
    path = copy_run(demo_run, tmp_path / "run")
    (path / "model.py").unlink()
    for pred_file in sorted((path / "dataset/prediction").glob("*.npy")):
        reps = np.load(path / "dataset/representation" / pred_file.name)
        w = np.random.default_rng(0).normal(size=(reps.shape[1], 10))
        np.save(pred_file, (np.tanh(reps @ w) ** 2).astype(np.float32))
    run = TrainingRun(path)
    with pytest.raises(SubjectHeadError, match="model.py") as err:
        load_subject_head(run, 2)
    assert "not a linear function" in str(err.value)
    assert str(run.model_code_path) in str(err.value)
    # The tolerant variant says so once and paints white instead of failing.
    with caplog.at_level(logging.WARNING, logger="ttvis.subject"):
        assert try_load_subject_head(run, 2) is None
    assert "model.py" in caplog.text


def test_model_code_without_state_file_raises(demo_run, tmp_path):
    path = copy_run(demo_run, tmp_path / "run")
    (path / "model" / "2.pth").unlink()
    run = TrainingRun(path)
    assert isinstance(load_subject_head(run, 1), ModelHead)
    with pytest.raises(SubjectHeadError, match=r"2\.pth"):
        load_subject_head(run, 2)


def test_run_without_predictions_has_no_head(demo_run, tmp_path):
    path = copy_run(demo_run, tmp_path / "run")
    (path / "model.py").unlink()
    for f in (path / "dataset/prediction").glob("*.npy"):
        f.unlink()
    (path / "config.json").unlink()
    run = TrainingRun(path)
    assert not run.is_classification
    assert try_load_subject_head(run, 1) is None
    with pytest.raises(SubjectHeadError, match="no model.py"):
        load_subject_head(run, 1)


def test_model_head_pickles_into_a_fresh_process(demo_run):
    head = load_subject_head(TrainingRun(demo_run), 3)
    reps = torch.from_numpy(np.array(TrainingRun(demo_run).representations(3), dtype=np.float32))
    payload = pickle.dumps((head, reps[:5], head.predict(reps[:5])))
    code = (
        "import pickle, sys, torch\n"
        "head, reps, expected = pickle.loads(sys.stdin.buffer.read())\n"
        "assert torch.allclose(head.predict(reps), expected, atol=1e-5)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
