"""The export folder has one reader (docs/design.md §2); evaluate.py and the plot command find
exports written with train.py's output_dir= (issue 17)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT, run_evaluate, run_train, train_env

from ttvis.config_check import ConfigError
from ttvis.export import atomic_save_npy, atomic_torch_save
from ttvis.export_folder import ExportError, ExportFolder
from ttvis.modules.autoencoder import Autoencoder


def test_named_folders(tmp_path):
    default = ExportFolder.named(tmp_path, "DVI, TimeVis", None)
    assert [f.path for f in default] == [tmp_path / "visualize" / n for n in ("DVI", "TimeVis")]
    assert [f.name for f in default] == ["DVI", "TimeVis"]
    (elsewhere,) = ExportFolder.named(tmp_path, ["DVI"], tmp_path / "out")
    assert elsewhere.path == tmp_path / "out" and elsewhere.name == "DVI"
    with pytest.raises(ConfigError, match="one name with output_dir"):
        ExportFolder.named(tmp_path, "DVI,TimeVis", tmp_path / "out")
    with pytest.raises(ConfigError, match="vis=' , '"):
        ExportFolder.named(tmp_path, " , ", None)


def test_reading_checks_every_file(tmp_path):
    folder = ExportFolder(tmp_path / "DVI")
    with pytest.raises(ExportError, match="no exports under .*run train.py first"):
        folder.require_epochs([1, 2])
    atomic_save_npy(folder.paths(1)["projection"], np.zeros((5, 2), np.float32))
    atomic_save_npy(folder.paths(1)["scale"], np.array([0, 0, 1, 1], np.float32))
    assert folder.require_epochs([1, 2]) == [1]
    assert folder.projection(1, 5).dtype == np.float64
    with pytest.raises(ExportError, match=r"shape \(5, 2\); expected \[6, 2\]"):
        folder.projection(1, 6)
    atomic_save_npy(folder.paths(2)["scale"], np.array([1, 0, 0, 1], np.float32))
    with pytest.raises(ExportError, match="x_min < x_max"):
        folder.scale(2)
    assert folder.background(1) is None  # pictures draw without one
    with pytest.raises(ExportError, match="1.pth: file not found"):
        folder.visualizer_path(1)


def test_a_lone_vismodel_serves_every_epoch_and_per_epoch_models_win(tmp_path):
    folder = ExportFolder(tmp_path / "TimeVis")
    model = Autoencoder([4, 8, 2], [2, 8, 4])
    atomic_torch_save(folder.paths(1)["vismodel"], model.export_state())
    assert folder.visualizer_path(3) == folder.paths(1)["vismodel"]  # older TimeVis exports
    atomic_torch_save(folder.paths(2)["vismodel"], model.export_state())
    assert folder.visualizer_path(2) == folder.paths(2)["vismodel"]
    with pytest.raises(ExportError, match="3.pth: file not found"):
        folder.visualizer_path(3)  # several models: each epoch needs its own
    assert folder.visualizer(2).encoder is not None


def test_evaluate_and_plot_read_exports_written_elsewhere(run_copy, tmp_path):
    """train.py output_dir=ELSEWHERE, then evaluate.py and the plot command with the same."""
    elsewhere = tmp_path / "elsewhere"
    args = [f"content_path={run_copy}", f"output_dir={elsewhere}", "export.plots=false"]
    run_train(args, tmp_path)
    assert not (run_copy / "visualize").exists()
    proc = run_evaluate([f"content_path={run_copy}", f"output_dir={elsewhere}", "k=5"], tmp_path)
    assert (elsewhere / "metrics.json").is_file() and "nn_train" in proc.stdout
    plot = subprocess.run(
        [sys.executable, "-m", "ttvis.plot", f"content_path={run_copy}", f"output_dir={elsewhere}",
         "plots.size=100", "plots.animation_size=50", f"hydra.run.dir={tmp_path / 'plot'}"],
        cwd=REPO_ROOT, env=train_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert sorted(p.name for p in (elsewhere / "plots").iterdir()) == [
        "1.png", "2.png", "3.png", "run.gif",
    ]  # fmt: skip
    assert not (run_copy / "visualize").exists()
