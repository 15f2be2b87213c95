"""The data contract (docs/design.md §1): every bad input fails early, naming the file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_KWARGS, run_train

from ttvis.datamodules import DVIDataModule
from ttvis.demo import build_demo_run
from ttvis.run import RunError, TrainingRun, discover_epochs, representation_dim
from ttvis.subject import SubjectHeadError, load_subject_head

REP = Path("dataset/representation")
PRED = Path("dataset/prediction")
LABELS = Path("dataset/label/labels.npy")


@pytest.fixture
def run(run_copy) -> Path:
    """A writable copy of the demo run (N=240, D=64, 10 classes, epochs 1..3)."""
    return run_copy


def _rep(path: Path, epoch: int) -> np.ndarray:
    return np.load(path / REP / f"{epoch}.npy")


def _raises(path: Path, *fragments: str, **kwargs) -> str:
    """TrainingRun(path) raises RunError whose message holds every fragment; returns it."""
    with pytest.raises(RunError) as err:
        TrainingRun(path, **kwargs)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_demo_run_is_valid(demo_run):
    run = TrainingRun(demo_run)
    assert run.epochs == [1, 2, 3]
    assert (run.shape.n_samples, run.shape.n_features, run.shape.dim) == (240, 1, 64)
    assert run.n_classes == 10 and run.is_classification
    assert run.train_index.size == 192 and run.test_index.size == 48
    assert representation_dim(demo_run) == 64
    assert run.train_representations(2).shape == (192, 64)


def test_the_demo_is_written_by_the_recorder(demo_run):
    """One way to write runs: the demo's folder is the recorder's layout (train rows, then test
    rows; the original tool's attributes) plus the demo's own model recipe."""
    config = json.loads((demo_run / "config.json").read_text())
    assert config["recorder"]["subject_head"] == "linear"
    assert {"label", "prediction"} <= set(config["dataset"]["attributes"])
    assert config["subject_model"]["class"] == "DigitsMLP" and (demo_run / "model.py").is_file()
    index = json.loads((demo_run / "index.json").read_text())
    assert index == {"train": list(range(192)), "test": list(range(192, 240))}


def test_building_the_demo_leaves_the_callers_random_stream_alone(demo_run, tmp_path):
    """train.py builds the demo inside its seeded run: a first build must not change what the
    visualizer then draws, and the demo is the same whatever the caller's random state."""
    torch.manual_seed(123)
    state = torch.get_rng_state()
    again = build_demo_run(tmp_path / "again", **DEMO_KWARGS)
    assert torch.equal(torch.get_rng_state(), state)
    for epoch in (1, 3):
        np.testing.assert_array_equal(_rep(again, epoch), _rep(demo_run, epoch))


# ------------------------------------------------------------------ folders and files


def test_missing_content_path(tmp_path):
    _raises(tmp_path / "nowhere", "nowhere", "no such folder")


def test_content_path_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    _raises(tmp_path / "file.txt", "file.txt", "not a folder")


def test_no_representation_folder(run):
    for f in (run / REP).iterdir():
        f.unlink()
    (run / REP).rmdir()
    _raises(run, str(run / REP), "folder not found")


def test_no_npy_files(run):
    for f in (run / REP).iterdir():
        f.unlink()
    _raises(run, str(run / REP), "no representation files")


def test_misnamed_files_are_ignored_with_a_warning(run, caplog):
    for name in ("epoch_4.npy", "0.npy", "07.npy"):
        np.save(run / REP / name, _rep(run, 1))
    (run / REP / "notes.txt").write_text("hello")
    with caplog.at_level(logging.WARNING, logger="ttvis.run"):
        assert discover_epochs(run) == [1, 2, 3]
        assert TrainingRun(run).epochs == [1, 2, 3]
    assert "epoch_4.npy" in caplog.text and "notes.txt" in caplog.text
    assert "07.npy" in caplog.text and "0.npy" in caplog.text


def test_only_misnamed_files(run):
    rep = _rep(run, 3)
    for f in (run / REP).iterdir():
        f.unlink()
    np.save(run / REP / "epoch_3.npy", rep)
    _raises(run, str(run / REP), "no representation files named '{epoch}.npy'")


def test_truncated_npy(run):
    data = (run / REP / "2.npy").read_bytes()
    (run / REP / "2.npy").write_bytes(data[: len(data) // 2])
    _raises(run, str(run / REP / "2.npy"), "not a readable .npy")


def test_invalid_npy(run):
    (run / REP / "3.npy").write_text("this is not numpy")
    _raises(run, str(run / REP / "3.npy"), "not a readable .npy")


def test_int_dtype(run):
    np.save(run / REP / "2.npy", _rep(run, 2).astype(np.int32))
    _raises(run, "2.npy", "dtype int32", "float")


@pytest.mark.parametrize("shape", [(240,), (240, 2, 4, 8)])
def test_wrong_number_of_axes(run, shape):
    np.save(run / REP / "1.npy", np.zeros(shape, np.float32))
    _raises(run, str(run / REP / "1.npy"), str(shape), "[N, D] or [N, F, D]")


def test_nan_rows_name_epoch_and_row_count(run):
    rep = _rep(run, 2)
    rep[[3, 50, 51]] = np.nan
    rep[60, 5] = np.inf
    np.save(run / REP / "2.npy", rep)
    _raises(run, str(run / REP / "2.npy"), "4 of 240 rows", "epoch 2", "NaN or inf")
    # The scan can be skipped; the rest of the contract still holds.
    assert TrainingRun(run, check_values=False).epochs == [1, 2, 3]


@pytest.mark.parametrize(("change", "shape"), [("N", (239, 64)), ("D", (240, 63))])
def test_shape_differs_between_epochs(run, change, shape):
    np.save(run / REP / "3.npy", _rep(run, 3)[: shape[0], : shape[1]])
    message = _raises(run, str(run / REP / "3.npy"), str(shape), "epoch 1's", "(240, 64)")
    assert "same in every epoch" in message


# ------------------------------------------------------------------ labels and predictions


def test_labels_wrong_length(run):
    np.save(run / LABELS, np.zeros(239, np.int64))
    _raises(run, str(run / LABELS), "(239,)", "[240]")


def test_labels_wrong_dtype(run):
    np.save(run / LABELS, np.zeros(240, np.float32))
    _raises(run, str(run / LABELS), "dtype float32")


@pytest.mark.parametrize(("bad", "span"), [(10, "span 0..10"), (-1, "span -1..9")])
def test_labels_out_of_range(run, bad, span):
    labels = np.load(run / LABELS)
    labels[7] = bad
    np.save(run / LABELS, labels)
    _raises(run, str(run / LABELS), span, "expected 0..9", "10 classes")


def test_prediction_wrong_n(run):
    np.save(run / PRED / "2.npy", np.zeros((200, 10), np.float32))
    _raises(run, str(run / PRED / "2.npy"), "(200, 10)", "[240, C]")


def test_prediction_class_count_differs(run):
    np.save(run / PRED / "3.npy", np.zeros((240, 9), np.float32))
    _raises(run, str(run / PRED / "3.npy"), "9 classes", "epoch 1", "10")


def test_prediction_int_dtype(run):
    np.save(run / PRED / "1.npy", np.zeros((240, 10), np.int64))
    _raises(run, str(run / PRED / "1.npy"), "dtype int64")


def test_prediction_missing_for_one_epoch(run):
    (run / PRED / "3.npy").unlink()
    _raises(run, str(run / PRED / "3.npy"), "file not found", "epoch 1")


# ------------------------------------------------------------------ index.json and config.json


def _index(run: Path, text: str) -> None:
    (run / "index.json").write_text(text)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"train": [1, 2', "not valid JSON"),
        ('{"test": [1, 2]}', '"train": [...]'),
        ("[1, 2, 3]", '"train": [...]'),
        ('{"train": [0, 1, 240]}', "0..239"),
        ('{"train": [0, 1], "test": [-1]}', "0..239"),
        ('{"train": [0, 1, 1]}', "duplicate"),
        ('{"train": [0, 1, 2], "test": [2, 3]}', "both train and test"),
        ('{"train": [], "test": [1]}', "empty"),
        ('{"train": [[0, 1], [2, 3]]}', "flat list"),
        ('{"train": ["a", "b"]}', "list of integers"),
    ],
)
def test_bad_index_json(run, content, fragment):
    _index(run, content)
    _raises(run, str(run / "index.json"), fragment)


@pytest.mark.parametrize("content", ['{"train": [0.5, 1.7, 3]}', '{"train": [0, true, 3]}'])
def test_index_json_non_integer_entries(run, content):
    _index(run, content)
    _raises(run, str(run / "index.json"), "list of integers")


def test_index_json_optional(run):
    (run / "index.json").unlink()
    r = TrainingRun(run)
    np.testing.assert_array_equal(r.train_index, np.arange(240))
    assert r.test_index.size == 0


def test_config_class_count_mismatch(run):
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["classes"] = ["a", "b", "c"]
    (run / "config.json").write_text(json.dumps(config))
    _raises(run, str(run / "config.json"), "3 class names", "10 columns")


def test_config_invalid_json(run):
    (run / "config.json").write_text("{oops")
    _raises(run, str(run / "config.json"), "not valid JSON")


# ------------------------------------------------------------------ epochs and sizes


def test_explicit_epoch_selection(run):
    assert TrainingRun(run, epochs=[3, 1]).epochs == [1, 3]
    _raises(run, "epochs=[1, 4]", "[4]", str(run / REP), "available: [1, 2, 3]", epochs=[1, 4])


def test_too_few_training_samples_for_k(run):
    _index(run, json.dumps({"train": [0, 1, 2, 3, 4], "test": [5, 6]}))
    r = TrainingRun(run)  # the run itself is fine
    with pytest.raises(RunError) as err:
        DVIDataModule(r, 1, n_neighbors=5)
    message = str(err.value)
    assert str(r.content_path) in message
    assert "5 training points" in message and "n_neighbors=5" in message
    DVIDataModule(r, 1, n_neighbors=4)  # k + 1 points are enough


def test_non_contiguous_epochs(run):
    for sub in (REP, PRED):
        (run / sub / "3.npy").rename(run / sub / "5.npy")
    (run / "model/3.pth").rename(run / "model/5.pth")
    r = TrainingRun(run)
    assert r.epochs == [1, 2, 5]
    assert r.representation_path(5).name == "5.npy"
    assert r.representations(5).shape == (240, 64)
    np.testing.assert_array_equal(r.representations(5), _rep(run, 5))
    assert TrainingRun(run, epochs=[5]).epochs == [5]
    _raises(run, "[3]", epochs=[3])


def _feature_run(root: Path, n: int = 20, f: int = 3, d: int = 4, c: int = 3) -> Path:
    rng = np.random.default_rng(0)
    (root / REP).mkdir(parents=True)
    (root / PRED).mkdir(parents=True)
    (root / LABELS).parent.mkdir(parents=True)
    for epoch in (1, 2):
        np.save(root / REP / f"{epoch}.npy", rng.normal(size=(n, f, d)).astype(np.float32))
        np.save(root / PRED / f"{epoch}.npy", rng.normal(size=(n, c)).astype(np.float32))
    np.save(root / LABELS, rng.integers(0, c, n))
    (root / "index.json").write_text(json.dumps({"train": [2, 5, 7], "test": [0, 1]}))
    return root


def test_features_per_sample_are_flattened(tmp_path):
    root = _feature_run(tmp_path / "run")
    run = TrainingRun(root)
    assert (run.shape.n_samples, run.shape.n_features, run.shape.dim) == (20, 3, 4)
    assert run.shape.n_points == 60
    assert representation_dim(root) == 4
    raw = np.load(root / REP / "2.npy")
    flat = run.representations(2)
    assert flat.shape == (60, 4)
    np.testing.assert_array_equal(flat[3 * 5 + 2], raw[5, 2])
    np.testing.assert_array_equal(run.point_index(np.array([2, 5])), [6, 7, 8, 15, 16, 17])
    np.testing.assert_array_equal(run.train_points, [6, 7, 8, 15, 16, 17, 21, 22, 23])
    np.testing.assert_array_equal(run.test_points, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(run.train_representations(2), raw[[2, 5, 7]].reshape(9, 4))
    # Without model.py a per-feature head cannot be recovered: the message says so.
    with pytest.raises(SubjectHeadError, match="model.py"):
        load_subject_head(run, 1)


def test_feature_run_shape_mismatch_names_both_epochs(tmp_path):
    root = _feature_run(tmp_path / "run")
    np.save(root / REP / "2.npy", np.zeros((20, 2, 4), np.float32))
    _raises(root, str(root / REP / "2.npy"), "(20, 2, 4)", "epoch 1's (20, 3, 4)")


# ------------------------------------------------------------------ through train.py


@pytest.mark.slow
def test_train_py_rejects_bad_run(run, tmp_path):
    rep = _rep(run, 2)
    rep[:5] = np.nan
    np.save(run / REP / "2.npy", rep)
    proc = run_train([f"content_path={run}"], tmp_path, check=False, timeout=120)
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output  # one readable line, not a stack trace
    assert f"{run / REP / '2.npy'}: 5 of 240 rows contain NaN" in output
    assert not (run / "visualize").exists()


def test_train_py_reports_a_missing_folder_before_importing_training(tmp_path):
    """A bad content_path is one line and exit 2 before torch, Lightning or numba-compiled
    UMAP are imported (their imports take seconds; Python's own import log shows them)."""
    missing = tmp_path / "nowhere"
    proc = run_train(
        [f"content_path={missing}"],
        tmp_path,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
        check=False,
        timeout=60,
    )
    assert proc.returncode == 2
    output = proc.stdout + proc.stderr
    assert f"content_path {missing}: no such folder" in output
    assert "Traceback" not in output
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "omegaconf" in imported  # the import log was captured
    heavy = {"torch", "lightning", "umap", "pynndescent", "numba", "sklearn"}
    assert not heavy & imported, f"imported before validation: {sorted(heavy & imported)}"


def test_selected_epochs_accepts_none_one_or_a_list():
    from omegaconf import OmegaConf

    from ttvis.run import selected_epochs

    assert selected_epochs(None) is None
    assert selected_epochs(5) == [5]
    assert selected_epochs(OmegaConf.create([1, 5, 10])) == [1, 5, 10]


def test_demo_refuses_more_samples_than_the_data_have(tmp_path, capsys):
    """``python -m ttvis.demo DIR --samples N`` above the data's count: one line naming the
    option, the value and the range, exit status 2, nothing written."""
    from ttvis.demo import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "run"), "--samples", "5000"])
    assert exit_info.value.code == 2
    assert "--samples 5000: expected 1..1797" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
