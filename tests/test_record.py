"""ttvis.record: the run folder written from a user's own training (plain PyTorch and Lightning),
read back by ttvis's own validation and subject-head loader; ttvis.tool_config."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, SMALL_SETTINGS, check_export, train_env
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from record_models import LitMLP, MLPHeadNet, NoFeatureNet
from torch.utils.data import DataLoader, TensorDataset

from ttvis import tool_config
from ttvis.demo_model import DigitsMLP
from ttvis.record import Recorder, RecordTrainingDynamics
from ttvis.record_pass import RecordError
from ttvis.run import RunError, TrainingRun
from ttvis.subject import LinearHead, ModelHead, SubjectHeadError, load_subject_head

N_SAMPLES, N_TRAIN = 300, 240
CLASSES = [f"digit {c}" for c in range(10)]
EXAMPLE = REPO_ROOT / "examples" / "digits_lightning.py"


def digits(n: int = N_SAMPLES, n_train: int = N_TRAIN):
    """Train and test TensorDatasets of scikit-learn digits: ``[64]`` float32 in 0..1, int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.data[:n] / 16.0).float()
    y = torch.from_numpy(data.target[:n]).long()
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def sgd_epoch(model: torch.nn.Module, data: TensorDataset, seed: int) -> None:
    """One shuffled, minibatched SGD epoch in train mode (what a user's loop does)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    loader = DataLoader(
        data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    for x, y in loader:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def all_inputs(train, test) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([train.tensors[0], test.tensors[0]]), torch.cat(
        [train.tensors[1], test.tensors[1]]
    )


def no_temporary_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_recorder_writes_the_seed_layout_that_ttvis_and_the_tool_read(tmp_path):
    train, test = digits()
    torch.manual_seed(0)
    model = DigitsMLP(hidden_dim=32, feature_dim=16)
    out = tmp_path / "run"
    recorder = Recorder(out, model, train_data=train, test_data=test, classes=CLASSES)
    for epoch in (1, 2, 3):
        sgd_epoch(model, train, seed=epoch)
        assert recorder.save(epoch) > 0
        assert model.training  # the training loop's mode is left as it was

    assert sorted(p.name for p in (out / "model").iterdir()) == ["1.pth", "2.pth", "3.pth"]
    reps = np.load(out / "dataset/representation/3.npy")
    preds = np.load(out / "dataset/prediction/3.npy")
    labels = np.load(out / "dataset/label/labels.npy")
    assert reps.dtype == np.float32 and reps.shape == (N_SAMPLES, 16)
    assert preds.dtype == np.float32 and preds.shape == (N_SAMPLES, 10)
    x, y = all_inputs(train, test)
    assert labels.dtype == np.int64 and np.array_equal(labels, y.numpy())
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(reps, model.feature(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(preds, model(x).numpy(), rtol=1e-5, atol=1e-5)
    state = torch.load(out / "model/3.pth", weights_only=True)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # Earlier epochs hold earlier weights, not copies of the last.
    assert not np.allclose(np.load(out / "dataset/prediction/1.npy"), preds)

    index = json.loads((out / "index.json").read_text())
    assert index == {"train": list(range(N_TRAIN)), "test": list(range(N_TRAIN, N_SAMPLES))}
    config = json.loads((out / "config.json").read_text())
    dataset = config["dataset"]
    assert dataset["taskType"] == "classification" and dataset["classes"] == CLASSES
    # The original tool's backend joins each pattern to the run folder, with ${epoch} replaced.
    label_file = out / dataset["attributes"]["label"]["source"]["pattern"]
    assert np.array_equal(np.load(label_file), labels)
    pred_pattern = dataset["attributes"]["prediction"]["source"]["pattern"]
    assert np.array_equal(np.load(out / pred_pattern.replace("${epoch}", "3")), preds)
    assert config["recorder"]["subject_head"] == "linear" and "subject_model" not in config

    run = TrainingRun(out)
    assert run.epochs == [1, 2, 3] and run.classes == CLASSES
    assert run.train_index.size == N_TRAIN and run.test_index.size == N_SAMPLES - N_TRAIN
    assert isinstance(load_subject_head(run, 3), LinearHead)
    assert sorted(recorder.seconds) == [1, 2, 3]
    assert no_temporary_files(out)


def test_pass_runs_in_eval_mode_without_gradients_and_restores_each_modules_mode(tmp_path):
    train, test = digits()
    torch.manual_seed(0)
    model = MLPHeadNet()
    model.train()
    model.head.eval()  # a user's partly frozen model: this flag must survive too
    running_mean = model.body[1].running_mean.clone()
    recorder = Recorder(tmp_path / "run", model, train_data=train, test_data=test)
    rng_state = torch.get_rng_state()
    recorder.save(1)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the user's training draws as before
    assert model.training and model.body.training and not model.head.training
    assert torch.equal(model.body[1].running_mean, running_mean)  # BatchNorm ran in eval mode
    assert all(p.grad is None for p in model.parameters())
    x, _ = all_inputs(train, test)
    with torch.no_grad():
        expected = model.eval()(x).numpy()  # dropout off, running statistics
    np.testing.assert_allclose(
        np.load(tmp_path / "run/dataset/prediction/1.npy"), expected, atol=1e-5
    )


def test_every_n_epochs_and_an_epoch_list_choose_what_is_recorded(tmp_path):
    train, test = digits(100, 80)
    model = DigitsMLP(hidden_dim=16, feature_dim=8)
    every = Recorder(
        tmp_path / "a", model, train_data=train, test_data=test, every_n_epochs=2, device="cpu"
    )
    listed = Recorder(tmp_path / "b", model, train_data=train, epochs=[1, 3])
    for epoch in (1, 2, 3, 4):
        every.save(epoch)
        listed.save(epoch)
    assert TrainingRun(tmp_path / "a").epochs == [2, 4]
    run_b = TrainingRun(tmp_path / "b")
    assert run_b.epochs == [1, 3] and run_b.shape.n_samples == 80 and run_b.test_index.size == 0
    assert listed.save(2, force=True) is not None and TrainingRun(tmp_path / "b").epochs == [
        1,
        2,
        3,
    ]


def test_a_named_layer_gives_flattened_features_found_by_suffix(tmp_path):
    train, test = digits(100, 80)
    torch.manual_seed(0)
    model = NoFeatureNet()
    Recorder(tmp_path / "run", model, train_data=train, test_data=test, feature_layer="trunk").save(
        1
    )
    x, _ = all_inputs(train, test)
    with torch.no_grad():
        expected = model.trunk(x).flatten(1).numpy()
    reps = np.load(tmp_path / "run/dataset/representation/1.npy")
    assert reps.shape == (100, 4 * 6 * 6)
    np.testing.assert_allclose(reps, expected, atol=1e-6)
    # The head (Flatten, Linear) is linear in these features: ttvis's least squares serves.
    assert isinstance(load_subject_head(TrainingRun(tmp_path / "run"), 1), LinearHead)

    class Wrapper(torch.nn.Module):  # feature_layer names are found inside wrappers too
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)

    Recorder(tmp_path / "w", Wrapper(), train_data=train, feature_layer="trunk").save(1)
    np.testing.assert_array_equal(np.load(tmp_path / "w/dataset/representation/1.npy"), reps[:80])
    with pytest.raises(RecordError, match="ambiguous"):
        Recorder(tmp_path / "x", model, train_data=train, feature_layer="1").save(1)
    with pytest.raises(RecordError, match="no module of that name.*trunk"):
        Recorder(tmp_path / "x", model, train_data=train, feature_layer="avgpool").save(1)
    with pytest.raises(RecordError, match="no feature\\(\\) method"):
        Recorder(tmp_path / "x", model, train_data=train).save(1)


def test_float16_representations_are_read_by_ttvis_and_rounding_is_not_taken_for_a_nonlinear_head(
    tmp_path,
):
    train, test = digits()
    torch.manual_seed(0)
    model = DigitsMLP(hidden_dim=32, feature_dim=16)
    sgd_epoch(model, train, seed=0)
    with torch.no_grad():
        model.body[2].bias += 20.0  # features near 20, where float16's spacing is 1/64
    recorder = Recorder(tmp_path / "run", model, train_data=train, test_data=test, dtype="float16")
    recorder.save(1)
    assert np.load(tmp_path / "run/dataset/representation/1.npy").dtype == np.float16
    assert recorder.subject_head == "linear"
    run = TrainingRun(tmp_path / "run")
    assert run.train_representations(1).dtype == np.float32
    head = load_subject_head(run, 1)
    # Rounding alone puts the fit above the float32 limit; ttvis still takes the linear head.
    assert isinstance(head, LinearHead) and head.residual > 1e-3
    reps = torch.from_numpy(np.array(run.representations(1), dtype=np.float32))
    agree = head.predict(reps).argmax(1).numpy() == run.predictions(1).argmax(1)
    assert agree.mean() > 0.99
    # A head that is not linear stays refused in float16.
    torch.manual_seed(0)
    nonlinear = MLPHeadNet()
    sgd_epoch(nonlinear, train, seed=0)
    other = Recorder(
        tmp_path / "mlp", nonlinear, train_data=train, dtype="float16", model_class="x:Y"
    )
    other.save(1)
    assert other.subject_head == "none"
    with pytest.raises(SubjectHeadError, match="not a linear function"):
        load_subject_head(TrainingRun(tmp_path / "mlp"), 1)


def test_a_nonlinear_head_is_stored_as_an_importable_class_and_loaded_by_ttvis(tmp_path, caplog):
    train, test = digits()
    torch.manual_seed(0)
    model = MLPHeadNet(feature_dim=12)
    sgd_epoch(model, train, seed=0)
    recorder = Recorder(
        tmp_path / "run", model, train_data=train, test_data=test, model_kwargs={"feature_dim": 12}
    )
    with caplog.at_level(logging.INFO, logger="ttvis.record"):
        recorder.save(1)
    assert recorder.subject_head == "import" and "record_models:MLPHeadNet" in caplog.text
    config = json.loads((tmp_path / "run/config.json").read_text())
    assert config["subject_model"] == {
        "import": "record_models:MLPHeadNet",
        "kwargs": {"feature_dim": 12},
    }
    run = TrainingRun(tmp_path / "run")
    head = load_subject_head(run, 1)
    assert isinstance(head, ModelHead)
    logits = head.predict(torch.from_numpy(np.array(run.representations(1))))
    np.testing.assert_allclose(
        logits.numpy(), np.load(tmp_path / "run/dataset/prediction/1.npy"), atol=1e-5
    )


def test_a_nonlinear_head_that_cannot_be_rebuilt_is_reported(tmp_path, caplog):
    class Local(MLPHeadNet):  # defined in a function: not importable
        pass

    train, _ = digits()
    recorder = Recorder(tmp_path / "run", Local(), train_data=train)
    with caplog.at_level(logging.WARNING, logger="ttvis.record"):
        recorder.save(1)
    assert recorder.subject_head == "none"
    assert "not linear" in caplog.text and "backgrounds white" in caplog.text
    assert "subject_model" not in json.loads((tmp_path / "run/config.json").read_text())


def test_a_folder_of_another_run_is_refused_and_left_alone(tmp_path):
    train, test = digits()
    model = DigitsMLP(hidden_dim=16, feature_dim=8)
    out = tmp_path / "run"
    Recorder(out, model, train_data=train, test_data=test, classes=CLASSES).save(1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    small_train, small_test = digits(200, 160)
    with pytest.raises(RunError, match=r"labels\.npy: 300 samples, expected 200 \(160 train"):
        Recorder(out, model, train_data=small_train, test_data=small_test)
    with pytest.raises(RunError, match=r"config\.json: classes \['digit 0'.*expected \['a'"):
        Recorder(out, model, train_data=train, test_data=test, classes=list("abcdefghij"))
    with pytest.raises(RunError, match=r"index\.json: 240 train \+ 60 test samples, expected 60"):
        Recorder(out, model, train_data=test, test_data=train)  # same N, other split
    shuffled_y = train.tensors[1].roll(1)
    relabelled = Recorder(
        out, model, train_data=TensorDataset(train.tensors[0], shuffled_y), test_data=test
    )
    with pytest.raises(RunError, match=r"labels\.npy: \d+ labels differ .*row 0, found"):
        relabelled.save(2)
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before

    (tmp_path / "other").mkdir()
    (tmp_path / "other/notes.txt").write_text("mine")
    with pytest.raises(RunError, match="no run folder entries"):
        Recorder(tmp_path / "other", model, train_data=train)


def test_the_same_run_continues_in_an_existing_folder(tmp_path):
    train, test = digits()
    model = DigitsMLP(hidden_dim=16, feature_dim=8)
    Recorder(tmp_path / "run", model, train_data=train, test_data=test).save(1)
    Recorder(tmp_path / "run", model, train_data=train, test_data=test).save(2)
    assert TrainingRun(tmp_path / "run").epochs == [1, 2]


def lightning_fit(
    callback, max_epochs: int, ckpt_dir: Path, ckpt_path: str | None = None, **checkpointing
) -> LitMLP:
    train, _ = digits()
    L.seed_everything(0, verbose=False)
    model = LitMLP()
    checkpointing = checkpointing or {"save_last": True, "save_top_k": -1}
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, **checkpointing)
    trainer = L.Trainer(
        max_epochs=max_epochs, accelerator="cpu", devices=1, callbacks=[callback, checkpoint],
        logger=CSVLogger(ckpt_dir.parent / "logs"), enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    loader = DataLoader(train, batch_size=32, shuffle=True)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model


def test_lightning_callback_records_each_epoch_and_a_resumed_fit_continues(tmp_path):
    train, test = digits()
    out = tmp_path / "run"

    def callback():
        return RecordTrainingDynamics(out, train_data=train, test_data=test, classes=CLASSES)

    model = lightning_fit(callback(), 2, tmp_path / "ckpt")
    assert TrainingRun(out).epochs == [1, 2]
    assert model.training
    metrics = (tmp_path / "logs/lightning_logs/version_0/metrics.csv").read_text()
    assert metrics.startswith("record/seconds") and len(metrics.splitlines()) == 3  # 2 epochs
    epoch2 = np.load(out / "dataset/representation/2.npy")
    # A crash after the checkpoint of epoch 2 but before its recording: the resumed fit
    # records epoch 2 first (from the checkpoint's weights), then continues.
    (out / "dataset/representation/2.npy").unlink()
    lightning_fit(callback(), 4, tmp_path / "ckpt", ckpt_path=str(tmp_path / "ckpt/last.ckpt"))
    assert TrainingRun(out).epochs == [1, 2, 3, 4]
    np.testing.assert_array_equal(np.load(out / "dataset/representation/2.npy"), epoch2)
    state = torch.load(out / "model/4.pth", weights_only=True)
    assert set(state) == set(LitMLP().state_dict())


def load_example():
    spec = importlib.util.spec_from_file_location("digits_lightning", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(
    args: list[str], tmp_path: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], cwd=REPO_ROOT, env=train_env(tmp_path),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_ddp_records_once_on_rank_zero_and_matches_a_single_process(tmp_path):
    out = tmp_path / "ddp"
    args = "--epochs 2 --samples 200 --devices 2 --strategy ddp --no-visualize".split()
    proc = run_example([str(out), *args], tmp_path)
    log_text = proc.stdout + proc.stderr
    assert "GLOBAL_RANK: 1" in log_text  # two processes ran
    assert log_text.count("recorded epoch") == 2  # rank zero alone recorded each epoch
    example = load_example()
    train, test, classes = example.digits_datasets(200, 0)
    for epoch in (1, 2):
        model = example.DigitsCNN(n_classes=10)
        model.load_state_dict(torch.load(out / f"model/{epoch}.pth", weights_only=True))
        single = tmp_path / f"single{epoch}"
        Recorder(single, model, train_data=train, test_data=test, feature_layer="embed").save(epoch)
        for kind in ("representation", "prediction"):
            np.testing.assert_array_equal(
                np.load(out / f"dataset/{kind}/{epoch}.npy"),
                np.load(single / f"dataset/{kind}/{epoch}.npy"),
            )
    assert TrainingRun(out).classes == classes


@pytest.mark.slow
def test_example_records_a_run_and_visualizes_it(tmp_path):
    """The example's shortened version: 300 digits, 2 epochs, train.py's small settings."""
    out = tmp_path / "digits-cnn"
    small = [f"{k}={v}" for k, v in SMALL_SETTINGS.items()] + [f"hydra.run.dir={tmp_path}/hydra"]
    args = ["--epochs", "2", "--samples", "300", "--dtype", "float16", *small]
    proc = run_example([str(out), *args], tmp_path, timeout=600)  # training, then train.py
    config = json.loads((out / "config.json").read_text())
    assert config["recorder"] == {"features": "embed", "dtype": "float16", "subject_head": "linear"}
    vis = check_export(out, [1, 2])
    assert f"exports: {vis}/projection/" in proc.stdout
    # train.py never modifies its input: every recorded file is older than the first export.
    inputs = [p for p in out.rglob("*") if p.is_file() and vis not in p.parents]
    first_export = min(p.stat().st_mtime_ns for p in vis.rglob("*") if p.is_file())
    assert max(p.stat().st_mtime_ns for p in inputs) < first_export


def test_tool_config_adds_the_tools_attributes_only_when_asked_keeping_a_backup(run_copy, tmp_path):
    path = run_copy / "config.json"
    # A run written before the recorder existed: no attributes (the demo now has them).
    written = json.loads(path.read_text())
    written["dataset"].pop("attributes", None)
    old_text = json.dumps(written, indent=2)
    path.write_text(old_text)
    assert tool_config.main([f"content_path={run_copy}"]) == 0
    new = json.loads(path.read_text())
    assert (run_copy / "config.json.bak").read_text() == old_text
    old = json.loads(old_text)
    assert new["subject_model"] == old["subject_model"] and new["source"] == old["source"]
    attributes = new["dataset"]["attributes"]
    assert np.load(run_copy / attributes["label"]["source"]["pattern"]).shape == (240,)
    pred = attributes["prediction"]["source"]["pattern"].replace("${epoch}", "2")
    assert np.load(run_copy / pred).shape == (240, 10)
    TrainingRun(run_copy)

    assert tool_config.main([f"content_path={run_copy}"]) == 0  # nothing to add: no new backup
    assert not (run_copy / "config.json.bak1").exists()
    path.unlink()
    assert tool_config.main([f"content_path={run_copy}"]) == 0  # created from the run itself
    created = json.loads(path.read_text())["dataset"]
    assert created["taskType"] == "classification" and created["classes"] == [
        str(c) for c in range(10)
    ]
    assert not (run_copy / "config.json.bak1").exists()
    assert tool_config.main([f"content_path={tmp_path / 'missing'}"]) == 2
    assert tool_config.main(["nonsense"]) == 2


def test_a_fit_resumed_mid_epoch_does_not_record_the_previous_epoch_with_later_weights(
    tmp_path, caplog
):
    train, test = digits()
    out = tmp_path / "run"

    def callback():
        return RecordTrainingDynamics(out, train_data=train, test_data=test)

    # 240 samples / 32 = 8 steps per epoch: step 10 is inside epoch 2.
    steps = {"every_n_train_steps": 10, "save_top_k": -1, "filename": "{step}"}
    lightning_fit(callback(), 2, tmp_path / "ckpt", **steps)
    (out / "dataset/representation/1.npy").unlink()
    with caplog.at_level(logging.WARNING, logger="ttvis.record"):
        lightning_fit(callback(), 3, tmp_path / "ckpt2", str(tmp_path / "ckpt/step=10.ckpt"))
    assert "mid-epoch checkpoint" in caplog.text
    assert TrainingRun(out).epochs == [2, 3]
