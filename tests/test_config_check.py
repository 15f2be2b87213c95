"""Bad settings fail before any work: one ConfigError line, exit status 2 (docs/design.md §9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONF_DIR, REPO_ROOT, run_train, train_env
from hydra import compose, initialize_config_dir

from ttvis.config_check import (
    EVALUATE_RULES,
    PLOT_COMMAND_RULES,
    TRAIN_RULES,
    ConfigError,
    check_config,
)
from ttvis.failure import exit_on_failure
from ttvis.plot import PlotSettings
from ttvis.training import train

# (overrides, fragment of the message: the setting and its value). Each is a real mistake a
# user can type; every one must stop train.py before the run folder is even opened.
BAD_TRAIN_SETTINGS = {
    "plots_size_zero": (["plots.size=0"], "plots.size=0"),
    "plots_format": (["plots.animation_format=avi"], "plots.animation_format='avi'"),
    "plots_alpha": (["plots.alpha=1.5"], "plots.alpha=1.5"),
    "plots_axes_rect": (["plots.axes_rect=[0,0,1]"], "plots.axes_rect=[0, 0, 1]"),
    "plots_unknown": (["+plots.colour=red"], "plots.colour='red'"),
    "plots_trajectories": (["plots.trajectories=-1"], "plots.trajectories=-1"),
    "plots_frame_ms": (["plots.frame_ms=0"], "plots.frame_ms=0"),
    "kcenter_fraction": (
        ["method=timevis", "method.sampling=kcenter", "method.kcenter.fraction=0"],
        "method.kcenter.fraction=0",
    ),
    "sampling_unknown": (["method=timevis", "method.sampling=random"], "method.sampling='random'"),
    "t_n_neighbors": (["method=timevis", "method.t_n_neighbors=0"], "method.t_n_neighbors=0"),
    "epoch_bias_shared": (
        ["method=timevis", "method.normalisation=shared"],
        "method.epoch_bias=True",
    ),
    "epoch_bias_text": (["method=timevis", "method.epoch_bias=yes"], "method.epoch_bias='yes'"),
    "batch_size_zero": (["method.batch_size=0"], "method.batch_size=0"),
    "batch_size_negative": (["method.batch_size=-5"], "method.batch_size=-5"),
    "n_neighbors_one": (["method.n_neighbors=1"], "method.n_neighbors=1"),
    "n_neighbors_text": (["method.n_neighbors=many"], "method.n_neighbors='many'"),
    "resolution_zero": (["export.resolution=0"], "export.resolution=0"),
    "resolution_negative": (["export.resolution=-300"], "export.resolution=-300"),
    "export_batch_size": (["export.batch_size=0"], "export.batch_size=0"),
    "boundary_gap": (["export.boundary_gap=2"], "export.boundary_gap=2"),
    "lr_zero": (["method.optimizer.lr=0"], "method.optimizer.lr=0"),
    "lambda1_negative": (["method.lambda1=-1"], "method.lambda1=-1"),
    "mix_fraction": (["method.mix_fraction=1.5"], "method.mix_fraction=1.5"),
    "negative_sample_rate": (["method.negative_sample_rate=0"], "method.negative_sample_rate=0"),
    "s_n_epochs": (["method.s_n_epochs=0"], "method.s_n_epochs=0"),
    "max_epochs": (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
    "warm_max_epochs": (["method.warm_max_epochs=0"], "method.warm_max_epochs=0"),
    "gradient_clip_val": (["method.gradient_clip_val=-1"], "method.gradient_clip_val=-1"),
    "recon_rows": (["method.recon_rows=0"], "method.recon_rows=0"),
    "boundary_delta": (
        ["method.b_n_epochs=1", "method.boundary.delta=0"],
        "method.boundary.delta=0",
    ),
    "boundary_steps": (["method.boundary.steps=0"], "method.boundary.steps=0"),
    "timevis_boundary_steps": (
        ["method=timevis", "method.boundary.steps=1.5"],
        "method.boundary.steps=1.5",
    ),
    "timevis_boundary_mix": (
        ["method=timevis", "method.boundary_mix_fraction=2"],
        "method.boundary_mix_fraction=2",
    ),
    "epochs_zero": (["epochs=[0,2]"], "epochs=[0, 2]"),
    "seed_negative": (["seed=-1"], "seed=-1"),
    "lambda_anchor_nan": (["method.lambda_anchor=nan"], "method.lambda_anchor=nan"),
    "lambda_layout": (["method.lambda_layout=-1"], "method.lambda_layout=-1"),
    "layout_epochs": (["method.layout_epochs=0"], "method.layout_epochs=0"),
}


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


@pytest.mark.parametrize("case", sorted(BAD_TRAIN_SETTINGS))
def test_bad_setting_stops_train_before_any_work(case, run_copy, capsys):
    overrides, fragment = BAD_TRAIN_SETTINGS[case]
    cfg = _compose("config", [f"content_path={run_copy}", "logger=none", *overrides])
    with pytest.raises(SystemExit) as stop, exit_on_failure(cfg, "train.py"):
        train(cfg)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"train.py: {fragment}: "), lines[0]
    assert ": expected " in lines[0] or "unknown setting" in lines[0]
    assert not (run_copy / "visualize").exists()


@pytest.mark.parametrize("method", ["dvi", "timevis"])
def test_default_configs_pass(method, demo_run):
    check_config(_compose("config", [f"content_path={demo_run}", f"method={method}"]))
    check_config(_compose("evaluate", [f"content_path={demo_run}"]), EVALUATE_RULES)
    check_config(_compose("plot", [f"content_path={demo_run}"]), PLOT_COMMAND_RULES)


def test_rules_only_apply_where_they_hold():
    """kcenter's fraction matters only with sampling=kcenter; absent keys are skipped."""
    cfg = {"method": {"sampling": "none", "kcenter": {"fraction": 0}}}
    check_config(cfg, TRAIN_RULES)
    cfg["method"]["sampling"] = "kcenter"
    with pytest.raises(ConfigError, match=r"method\.kcenter\.fraction=0: expected a share"):
        check_config(cfg, TRAIN_RULES)
    check_config({"method": {"max_epochs": None}}, TRAIN_RULES)  # optional: null is fine


def test_evaluate_checks_the_bisection_steps():
    check_config({"boundary": {"steps": 12}}, EVALUATE_RULES)
    with pytest.raises(ConfigError, match=r"boundary\.steps=0: expected an integer >= 1"):
        check_config({"boundary": {"steps": 0}}, EVALUATE_RULES)


def test_plot_settings_use_the_same_rules():
    with pytest.raises(ConfigError, match=r"plots\.dpi=0: expected an integer >= 1"):
        PlotSettings(dpi=0)
    with pytest.raises(ValueError, match=r"plots\.sizee=3: unknown setting"):
        PlotSettings.from_mapping({"sizee": 3})


def _command(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *argv, f"hydra.run.dir={tmp_path / 'hydra'}"],
        cwd=REPO_ROOT, env=train_env(tmp_path), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_train_py_exits_2_with_one_line(run_copy, tmp_path):
    proc = run_train([f"content_path={run_copy}", "plots.size=0"], tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "train.py: plots.size=0: expected an integer >= 1" in proc.stderr.splitlines()
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (run_copy / "visualize").exists()


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["evaluate.py", "k=0"], "evaluate.py: k=0: expected an integer >= 1"),
        (["evaluate.py", "vis=[]"], "evaluate.py: vis=[]: expected one or more export folder"),
        (["-m", "ttvis.plot", "plots.frame_ms=0"], "ttvis.plot: plots.frame_ms=0: expected"),
        (["-m", "ttvis.plot", "epochs=-2"], "ttvis.plot: epochs=-2: expected null, an epoch"),
        (["-m", "ttvis.view", "port=-1"], "ttvis.view: port=-1: expected an integer in 0..65535"),
        (["-m", "ttvis.view", "+page.colour=red"], "ttvis.view: page.colour='red': unknown"),
    ],
)
def test_evaluate_and_plot_share_the_failure_path(argv, line, run_copy, tmp_path):
    proc = _command([*argv, f"content_path={run_copy}"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines


def _console_script(name: str, function: str) -> list[str]:
    """argv running ``ttvis.cli.{function}`` the way the console script ``name`` does."""
    code = f"import sys; sys.argv[0] = {name!r}; from ttvis.cli import {function}; {function}()"
    return ["-c", code]


def test_console_scripts_are_the_commands():
    import importlib

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert set(scripts) == {"ttvis-train", "ttvis-evaluate", "ttvis-plot", "ttvis-view"}
    for target in scripts.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


@pytest.mark.parametrize(
    ("name", "function", "setting"),
    [
        ("ttvis-train", "train", "method.n_neighbors=1"),
        ("ttvis-evaluate", "evaluate", "k=0"),
        ("ttvis-plot", "plot", "plots.frame_ms=0"),
        ("ttvis-view", "view", "page.point_size=0"),
    ],
)
def test_console_scripts_share_the_failure_path(name, function, setting, run_copy, tmp_path):
    proc = _command(
        [*_console_script(name, function), setting, f"content_path={run_copy}"], tmp_path
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{name}: {setting}: expected"), lines


def test_debug_shows_the_traceback(run_copy, tmp_path):
    proc = _command(["evaluate.py", "k=0", "debug=true", f"content_path={run_copy}"], tmp_path)
    assert proc.returncode != 0 and "ConfigError" in proc.stderr and "Traceback" in proc.stderr
