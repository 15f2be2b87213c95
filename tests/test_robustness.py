"""Bad input, read-only folders, interruption, sweeps and numerical trouble, each driven through
``python train.py`` as a subprocess, the way a user runs it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    REPO_ROOT,
    check_export,
    copy_run,
    run_evaluate,
    run_train,
    train_command,
    train_env,
)

from ttvis.run import TrainingRun

pytestmark = pytest.mark.slow

REP = Path("dataset/representation")
PRED = Path("dataset/prediction")
LABELS = Path("dataset/label/labels.npy")


# ------------------------------------------------------------------ 1. validation before work


def _save(run: Path, rel: Path, array: np.ndarray) -> None:
    np.save(run / rel, array)


def _rep(run: Path, epoch: int) -> np.ndarray:
    return np.load(run / REP / f"{epoch}.npy")


def _missing_folder(run: Path) -> tuple[list[str], list[str]]:
    return [f"content_path={run / 'nowhere'}"], ["nowhere", "no such folder"]


def _no_representation_folder(run: Path):
    for f in (run / REP).iterdir():
        f.unlink()
    (run / REP).rmdir()
    return [], [str(run / REP), "folder not found"]


def _misnamed_only(run: Path):
    rep = _rep(run, 1)
    for f in (run / REP).iterdir():
        f.unlink()
    np.save(run / REP / "epoch_1.npy", rep)
    return [], [str(run / REP), "no representation files named"]


def _truncated(run: Path):
    data = (run / REP / "2.npy").read_bytes()
    (run / REP / "2.npy").write_bytes(data[: len(data) // 2])
    return [], [str(run / REP / "2.npy"), "not a readable .npy"]


def _int_dtype(run: Path):
    _save(run, REP / "2.npy", _rep(run, 2).astype(np.int32))
    return [], [str(run / REP / "2.npy"), "dtype int32"]


def _nan_rows(run: Path):
    rep = _rep(run, 2)
    rep[:5] = np.nan
    _save(run, REP / "2.npy", rep)
    return [], [f"{run / REP / '2.npy'}: 5 of 240 rows contain NaN", "epoch 2"]


def _shape_differs(run: Path):
    _save(run, REP / "3.npy", _rep(run, 3)[:, :63])
    return [], [str(run / REP / "3.npy"), "(240, 63)", "epoch 1's", "(240, 64)"]


def _labels_out_of_range(run: Path):
    labels = np.load(run / LABELS)
    labels[7] = 12
    _save(run, LABELS, labels)
    return [], [str(run / LABELS), "expected 0..9"]


def _prediction_wrong_n(run: Path):
    _save(run, PRED / "2.npy", np.load(run / PRED / "2.npy")[:200])
    return [], [str(run / PRED / "2.npy"), "(200, 10)", "[240, C]"]


def _index_overlap(run: Path):
    (run / "index.json").write_text('{"train": [0, 1, 2, 3, 4, 5, 6, 7], "test": [2, 3]}')
    return [], [str(run / "index.json"), "both train and test"]


def _config_class_count(run: Path):
    config = json.loads((run / "config.json").read_text())
    config["dataset"]["classes"] = ["a", "b", "c"]
    (run / "config.json").write_text(json.dumps(config))
    return [], [str(run / "config.json"), "3 class names"]


def _unknown_epoch(run: Path):
    return ["epochs=[1,4]"], [str(run / REP), "[4]"]


def _too_few_training_samples(run: Path):
    (run / "index.json").write_text('{"train": [0, 1, 2, 3, 4], "test": [5, 6]}')
    return ["method.n_neighbors=5"], ["5 training points", "n_neighbors=5", "at least 6"]


def _negative_anchor_power(run: Path):
    return ["method.anchor_power=-1"], ["method.anchor_power=-1", "expected a number >= 0"]


def _negative_timevis_anchor(run: Path):
    args = ["method=timevis", "method.lambda_anchor=-0.1"]
    return args, ["method.lambda_anchor=-0.1", "expected a number >= 0"]


BAD_INPUTS: dict[str, Callable[[Path], tuple[list[str], list[str]]]] = {
    "missing_folder": _missing_folder,
    "no_representation_folder": _no_representation_folder,
    "misnamed_only": _misnamed_only,
    "truncated_npy": _truncated,
    "int_dtype": _int_dtype,
    "nan_rows": _nan_rows,
    "shape_differs": _shape_differs,
    "labels_out_of_range": _labels_out_of_range,
    "prediction_wrong_n": _prediction_wrong_n,
    "index_overlap": _index_overlap,
    "config_class_count": _config_class_count,
    "unknown_epoch": _unknown_epoch,
    "too_few_training_samples": _too_few_training_samples,
    "negative_anchor_power": _negative_anchor_power,
    "negative_timevis_anchor": _negative_timevis_anchor,
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_stops_before_work(case, run_copy, tmp_path):
    args, fragments = BAD_INPUTS[case](run_copy)
    if not any(a.startswith("content_path=") for a in args):
        args = [f"content_path={run_copy}", *args]
    proc = run_train(args, tmp_path, check=False, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output  # one readable message, not a stack trace
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("train.py: ")]
    assert len(error_lines) == 1, output[-3000:]
    for fragment in fragments:
        assert fragment in error_lines[0], f"{fragment!r} not in {error_lines[0]!r}"
    assert not (run_copy / "visualize").exists()
    assert "complex of" not in output  # no k-NN, no training


def test_debug_flag_shows_the_traceback(run_copy, tmp_path):
    _int_dtype(run_copy)
    proc = run_train([f"content_path={run_copy}", "debug=true"], tmp_path, check=False)
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr and "RunError" in proc.stderr


# ------------------------------------------------------------------ 2. inputs are never touched


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file outside ``visualize/``."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file() and "visualize" not in p.relative_to(root).parts
    }


def test_input_files_are_never_changed(run_copy, tmp_path):
    before = _snapshot(run_copy)
    run_train([f"content_path={run_copy}"], tmp_path)
    assert _snapshot(run_copy) == before
    assert sorted(p.name for p in run_copy.iterdir()) == sorted(
        [*{Path(k).parts[0] for k in before}, "visualize"]
    )


def _make_read_only(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def _make_writable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


def test_read_only_run_gets_a_clear_error_or_output_dir(run_copy, tmp_path):
    _make_read_only(run_copy)
    try:
        if os.access(run_copy, os.W_OK):
            pytest.skip("this user (root) can write into read-only folders")
        proc = run_train([f"content_path={run_copy}"], tmp_path, check=False)
        assert proc.returncode == 2
        output = proc.stdout + proc.stderr
        assert "read-only" in output and "output_dir=" in output and "Traceback" not in output
        elsewhere = tmp_path / "exports"
        run_train([f"content_path={run_copy}", f"output_dir={elsewhere}"], tmp_path)
        check_export(run_copy, [1, 2, 3], vis=elsewhere)
    finally:
        _make_writable(run_copy)


def test_output_dir_writes_elsewhere(run_copy, tmp_path):
    before = _snapshot(run_copy)
    elsewhere = tmp_path / "exports" / "mine"
    run_train([f"content_path={run_copy}", f"output_dir={elsewhere}"], tmp_path)
    check_export(run_copy, [1, 2, 3], vis=elsewhere)
    assert not (run_copy / "visualize").exists()
    assert _snapshot(run_copy) == before


def test_output_dir_under_a_file_is_refused(run_copy, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    proc = run_train(
        [f"content_path={run_copy}", f"output_dir={blocker / 'out'}"], tmp_path, check=False
    )
    assert proc.returncode == 2
    assert f"{blocker} is a file, not a folder" in proc.stdout + proc.stderr


# ------------------------------------------------------------------ 3. kill and resume

# Long enough per subject epoch (~1-2 s) for the kill to land in the middle of the run.
SLOW_FIT = [
    "trainer.max_epochs=40",
    "method.warm_max_epochs=40",
    "method.s_n_epochs=2",
    "method.batch_size=100",
]


def _mtimes(vis: Path, epoch: int) -> dict[str, int]:
    """Modification times of ``epoch``'s exports and checkpoint (all must exist)."""
    names = ["projection/{}.npy", "scale/{}.npy", "bgimg/{}.png", "vismodel/{}.pth", "resume/{}.pt"]
    return {n: (vis / n.format(epoch)).stat().st_mtime_ns for n in names}


def test_sigkill_then_resume(run_copy, tmp_path):
    args = [f"content_path={run_copy}", *SLOW_FIT]
    vis = run_copy / "visualize" / "DVI"
    proc = subprocess.Popen(
        train_command(args, tmp_path),
        cwd=REPO_ROOT,
        env=train_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while not (vis / "resume" / "1.pt").exists():
            assert proc.poll() is None, "train.py ended before finishing subject epoch 1"
            assert time.monotonic() < deadline, "subject epoch 1 took too long"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # in the middle of subject epoch 2
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (vis / "resume" / "3.pt").exists(), "the kill came too late to test a resume"
    first = _mtimes(vis, 1)

    proc = run_train(args, tmp_path)
    output = proc.stdout + proc.stderr
    assert "Resuming: epochs [1] are already exported" in output
    assert "epoch 1 (1/3)" not in output and "epoch 2 (2/3)" in output
    assert _mtimes(vis, 1) == first  # not retrained
    check_export(run_copy, [1, 2, 3], vis=vis)

    # Same command again: nothing left to train. A changed setting retrains every epoch.
    again = run_train(args, tmp_path)
    assert "Resuming: epochs [1, 2, 3]" in again.stdout + again.stderr
    changed = run_train([*args, "method.lambda1=0.5"], tmp_path)
    assert "Resuming" not in changed.stdout + changed.stderr
    assert _mtimes(vis, 1) != first
    check_export(run_copy, [1, 2, 3], vis=vis)


def test_resumed_run_matches_an_uninterrupted_one(run_copy, demo_run, tmp_path):
    """Resuming from epoch 2's checkpoint gives the same final epoch as training straight
    through: the checkpoint carries everything the next epoch needs."""
    straight = copy_run(demo_run, tmp_path / "straight")
    run_train([f"content_path={straight}"], tmp_path)
    run_train([f"content_path={run_copy}"], tmp_path)
    vis = run_copy / "visualize" / "DVI"
    for sub, name in (("projection", "3.npy"), ("resume", "3.pt")):
        (vis / sub / name).unlink()
    proc = run_train([f"content_path={run_copy}"], tmp_path)
    assert "Resuming: epochs [1, 2]" in proc.stdout + proc.stderr
    ours = np.load(vis / "projection" / "3.npy")
    theirs = np.load(straight / "visualize" / "DVI" / "projection" / "3.npy")
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ 4. sweeps


def test_sweep_jobs_write_separate_folders(run_copy, tmp_path):
    sweep_dir = tmp_path / "sweep"
    run_train(
        ["-m", f"content_path={run_copy}", "method.lambda1=0.5,2", f"hydra.sweep.dir={sweep_dir}"],
        tmp_path,
    )
    folders = sorted(p.name for p in (run_copy / "visualize").iterdir())
    assert len(folders) == 2, folders
    assert any("method.lambda1=0.5" in f for f in folders)
    assert any("method.lambda1=2" in f for f in folders)
    assert all(f.startswith("DVI_") for f in folders)
    for folder in folders:
        check_export(run_copy, [1, 2, 3], vis=run_copy / "visualize" / folder)
    projections = [np.load(run_copy / "visualize" / f / "projection" / "3.npy") for f in folders]
    assert not np.allclose(*projections)  # two different visualizers, not one file twice
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    # A sweep folder is an ordinary export: evaluate.py takes its name.
    run_evaluate([f"content_path={run_copy}", f"vis='{folders[0]}'"], tmp_path)
    assert (run_copy / "visualize" / folders[0] / "metrics.json").is_file()


# ------------------------------------------------------------------ 5. numerical guards


def test_nan_loss_stops_with_a_message_and_exports_nothing(run_copy, tmp_path):
    proc = run_train(
        [f"content_path={run_copy}", "method.optimizer.lr=1e20"], tmp_path, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    assert "the loss became nan in subject epoch 1" in output
    assert "last finite loss: " in output
    vis = run_copy / "visualize" / "DVI"
    assert not vis.exists() or not list(vis.rglob("*.npy"))


def test_constant_and_duplicate_representations_export(run_copy, tmp_path):
    rep = _rep(run_copy, 2)
    rep[:] = rep[0]  # every row equal
    _save(run_copy, REP / "2.npy", rep)
    rep = _rep(run_copy, 3)
    rep[:] = rep[np.arange(len(rep)) // 20 * 20]  # groups of 20 exact duplicates
    _save(run_copy, REP / "3.npy", rep)
    run_train([f"content_path={run_copy}"], tmp_path)
    vis = check_export(run_copy, [1, 2, 3], spread=False)
    run = TrainingRun(run_copy)
    constant = np.load(vis / "projection" / "2.npy")
    np.testing.assert_allclose(constant, constant[:1].repeat(len(constant), 0), atol=1e-4)
    grouped = np.load(vis / "projection" / "3.npy")
    assert grouped.std(0).min() > 0
    assert run.shape.n_points == grouped.shape[0]


# ------------------------------------------------------------------ 6. resources


def test_nothing_accumulates_across_subject_epochs(run_copy, tmp_path):
    """When subject epoch e's datamodule (its complex, its arrays) is created, no earlier one is
    alive: memory holds one epoch at a time. ``benchmarks/memory.py`` measures the peak."""
    probe = tmp_path / "alive.jsonl"
    env = {"TTVIS_MEMPROBE": str(probe), "PYTHONPATH": str(REPO_ROOT / "tests")}
    run_train(
        [f"content_path={run_copy}", "method.datamodule._target_=memprobe.TrackedDVIDataModule"],
        tmp_path,
        env=env,
    )
    records = [json.loads(line) for line in probe.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["alive"] for r in records] == [0, 0, 0]
