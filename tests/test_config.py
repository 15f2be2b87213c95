"""Every method x model config composes, and the autoencoder dims follow the run's D."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CONF_DIR, run_train
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from ttvis.modules import Autoencoder

METHODS = sorted(p.stem for p in (CONF_DIR / "method").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def test_configs_are_discovered():
    assert "dvi" in METHODS
    assert "default" in MODELS
    assert "dvi_warm_by_need" in EXPERIMENTS


def _compose(method: str, model: str, content_path: Path, extra: list[str] | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "config",
            overrides=[f"method={method}", f"model={model}", f"content_path={content_path}"]
            + list(extra or []),
            return_hydra_config=True,
        )


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_checks(experiment, demo_run):
    """``python train.py +experiment=NAME`` composes, passes the settings check and builds."""
    from ttvis.config_check import check_config
    from ttvis.training import instantiate_callbacks

    text = (CONF_DIR / "experiment" / f"{experiment}.yaml").read_text()
    assert text.startswith("# @package _global_\n"), "experiments set keys of the whole config"
    assert f"+experiment={experiment}" in text, "say how to run it"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[f"+experiment={experiment}", f"content_path={demo_run}"],
            return_hydra_config=True,
        )
        default = compose("config", overrides=[f"content_path={demo_run}"])
    check_config(cfg)
    instantiate(cfg.method.datamodule)
    instantiate(cfg.method.module)
    instantiate_callbacks(cfg)
    changed = OmegaConf.to_container(cfg.method) != OmegaConf.to_container(default.method)
    assert changed or cfg.callbacks != default.callbacks, "the experiment changes nothing"


def _expected_dims(cfg, dim: int) -> tuple[list[int], list[int]]:
    hidden = [int(h) for h in cfg.model.hidden_dims]
    latent = int(cfg.model.latent_dim)
    return [dim, *hidden, latent], [latent, *reversed(hidden), dim]


@pytest.fixture(scope="module")
def narrow_run(tmp_path_factory) -> Path:
    """A minimal run whose D (7) differs from the demo's, to show D is read, not typed."""
    root = tmp_path_factory.mktemp("narrow") / "run"
    rep = root / "dataset" / "representation"
    rep.mkdir(parents=True)
    for epoch in (1, 2):
        np.save(rep / f"{epoch}.npy", np.random.default_rng(epoch).random((30, 7), np.float32))
    return root


@pytest.mark.parametrize(("method", "model"), list(itertools.product(METHODS, MODELS)))
def test_compose_every_combination(method, model, demo_run, narrow_run):
    for run in (demo_run, narrow_run):
        dim = int(np.load(run / "dataset/representation/1.npy", mmap_mode="r").shape[-1])
        cfg = _compose(method, model, run)
        enc, dec = _expected_dims(cfg, dim)
        assert list(cfg.model.encoder_dims) == enc
        assert list(cfg.model.decoder_dims) == dec
        assert enc[-1] == 2 and dec[0] == 2
        assert cfg.model.input_dim == dim
        assert cfg.method.name
        assert cfg.output_dir == f"{run}/visualize/{cfg.vis_name}"
        module_cfg = cfg.method.get("module")
        if module_cfg is not None and "encoder_dims" in module_cfg:
            assert list(module_cfg.encoder_dims) == enc
            assert list(module_cfg.decoder_dims) == dec
            # The module config instantiates into a network of exactly those shapes.
            module = instantiate(module_cfg)(subject_epoch=1, log_prefix="test")
            z, x_hat = module.autoencoder(torch.zeros(3, dim))
            assert z.shape == (3, 2) and x_hat.shape == (3, dim)
            assert isinstance(module.autoencoder, Autoencoder)


def test_hidden_dims_override_changes_dims(demo_run):
    cfg = _compose("dvi", "default", demo_run, ["model.hidden_dims=[16,8]"])
    dim = int(np.load(demo_run / "dataset/representation/1.npy", mmap_mode="r").shape[-1])
    assert list(cfg.model.encoder_dims) == [dim, 16, 8, 2]
    assert list(cfg.model.decoder_dims) == [2, 8, 16, dim]


def test_trainer_and_callbacks_instantiate(demo_run, tmp_path):
    cfg = _compose("dvi", "default", demo_run, [f"hydra.run.dir={tmp_path}"])
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c]
    assert {type(c).__name__ for c in callbacks} >= {"ExportCallback", "PlotCallback"}
    assert "EarlyStopping" not in {type(c).__name__ for c in callbacks}  # fits run their length
    stopping = _compose("dvi", "default", demo_run, ["callbacks=early_stopping"])
    names = {type(instantiate(c)).__name__ for c in stopping.callbacks.values() if c}
    assert names >= {"ExportCallback", "EarlyStopping"}
    export = next(c for c in callbacks if type(c).__name__ == "ExportCallback")
    assert Path(export.out_dir) == demo_run / "visualize" / "DVI"
    assert OmegaConf.select(cfg, "trainer._target_") == "lightning.pytorch.Trainer"


@pytest.mark.parametrize(
    ("method", "overrides", "expected"),
    [
        ("dvi", [], 1.0),  # the method's clip
        ("dvi", ["method.gradient_clip_val=null"], None),
        ("dvi", ["+trainer.gradient_clip_val=5.0"], 5.0),  # the trainer's, when set, wins
        ("timevis", [], None),
    ],
)
def test_the_gradient_clip_comes_from_the_method_unless_the_trainer_sets_one(
    demo_run, method, overrides, expected
):
    from ttvis import training

    cfg = _compose(method, "default", demo_run, ["trainer.accelerator=cpu", *overrides])
    assert training.make_trainer(cfg, logger=False).gradient_clip_val == expected


@pytest.mark.parametrize(("devices", "threads", "warns"), [(2, "2", True), (2, "1", False)])
def test_cpu_processes_asking_for_more_threads_than_cores_are_warned(
    demo_run, monkeypatch, caplog, devices, threads, warns
):
    """With OMP_NUM_THREADS set, Lightning leaves every CPU process that many threads."""
    from ttvis import training

    monkeypatch.setattr(training, "_warned_oversubscribed", False)
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    overrides = ["trainer.accelerator=cpu", f"trainer.devices={devices}", "trainer.strategy=ddp"]
    cfg = _compose("dvi", "default", demo_run, overrides)
    with caplog.at_level("WARNING", logger="ttvis.training"):
        training.make_trainer(cfg, logger=False)
    found = [r.getMessage() for r in caplog.records if "exceed" in r.getMessage()]
    if warns:
        assert found and "OMP_NUM_THREADS=2" in found[0] and "2 cores" in found[0], found
        assert "Set OMP_NUM_THREADS=1" in found[0]
    else:
        assert not found


def _cfg_job(demo_run, tmp_path, resolve: bool):
    flags = ["--cfg", "job"] + (["--resolve"] if resolve else [])
    return run_train([*flags, f"content_path={demo_run}"], tmp_path, small=False, check=False)


def test_cfg_job_prints_dims_unresolved(demo_run, tmp_path):
    proc = _cfg_job(demo_run, tmp_path, resolve=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "encoder_dims: ${ttvis.encoder_dims:" in proc.stdout
    assert not (demo_run / "visualize").exists()


def test_cfg_job_resolve_prints_dims(demo_run, tmp_path):
    proc = _cfg_job(demo_run, tmp_path, resolve=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dim = int(np.load(demo_run / "dataset/representation/1.npy", mmap_mode="r").shape[-1])
    cfg = OmegaConf.create(proc.stdout)
    hidden = list(cfg.model.hidden_dims)
    assert list(cfg.model.encoder_dims) == [dim, *hidden, 2]
    assert list(cfg.model.decoder_dims) == [2, *reversed(hidden), dim]
    assert re.search(rf"input_dim: {dim}\b", proc.stdout)


def test_progress_bar_dropped_when_trainer_disables_it(demo_run):
    from lightning.pytorch.callbacks import ProgressBar

    from ttvis.training import instantiate_callbacks

    on = _compose("dvi", "default", demo_run)
    off = _compose("dvi", "default", demo_run, ["trainer.enable_progress_bar=false"])
    assert any(isinstance(c, ProgressBar) for c in instantiate_callbacks(on))
    assert not any(isinstance(c, ProgressBar) for c in instantiate_callbacks(off))


def test_progress_is_a_bar_on_a_terminal_and_log_lines_elsewhere():
    import io

    from ttvis.callbacks import EpochLogProgress, SubjectEpochProgressBar, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_bar(Terminal()), SubjectEpochProgressBar)
    assert isinstance(progress_bar(io.StringIO()), EpochLogProgress)


def test_warm_fits_use_the_warm_schedule(demo_run):
    from ttvis.training import warm_fit

    def warm_schedule(overrides):
        cfg = _compose("dvi", "default", demo_run, overrides)
        module_overrides, trainer_overrides = warm_fit(cfg)
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        return cfg, module_overrides["scheduler"](optimizer=optimizer), trainer_overrides

    _, scheduler, trainer_overrides = warm_schedule(["method.warm_max_epochs=5"])
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 5
    assert trainer_overrides == {"max_epochs": 5}

    # Without warm_max_epochs the warm fit runs trainer.max_epochs, and the cosine spans that.
    cfg, scheduler, trainer_overrides = warm_schedule(["method.warm_max_epochs=null"])
    assert scheduler.T_max == cfg.trainer.max_epochs
    assert trainer_overrides == {}

    plain = _compose(
        "dvi",
        "default",
        demo_run,
        ["method.warm_scheduler=null", "method.warm_max_epochs=null", "method.warm_ramp_epochs=0"],
    )
    assert warm_fit(plain) == ({}, {})
    # The learning-rate ramp is the warm fits' alone: the first fit's module gets none.
    assert cfg.method.warm_ramp_epochs == 1
    assert warm_fit(cfg)[0]["lr_ramp_epochs"] == 1.0
    assert "lr_ramp_epochs" not in cfg.method.module


def test_warm_fits_train_in_proportion_to_the_neighbourhoods_that_changed(demo_run):
    from ttvis.training import warm_fit, warm_fit_epochs

    cfg = _compose("dvi", "default", demo_run, ["method.warm_min_epochs=1"])
    assert cfg.method.warm_max_epochs == 8
    # ceil(8 x share lost), at least warm_min_epochs, at most warm_max_epochs.
    expected = {0.0: 1, 0.05: 1, 0.125: 1, 0.13: 2, 0.225: 2, 0.6: 5, 1.0: 8, 1.5: 8}
    assert {c: warm_fit_epochs(cfg, c) for c in expected} == expected
    module_overrides, trainer_overrides = warm_fit(cfg, 0.6)
    assert trainer_overrides == {"max_epochs": 5}
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    assert module_overrides["scheduler"](optimizer=optimizer).T_max == 5  # the cosine spans it
    fixed = _compose("dvi", "default", demo_run)  # the default: the full length
    assert fixed.method.warm_min_epochs is None
    assert warm_fit_epochs(fixed, 0.0) == warm_fit_epochs(fixed, 1.0) == 8
    floor = _compose("dvi", "default", demo_run, ["method.warm_min_epochs=3"])
    assert warm_fit_epochs(floor, 0.1) == 3


@pytest.mark.parametrize("name", ["config", "evaluate", "plot", "view"])
def test_commands_default_to_the_same_demo_run(name):
    """``python train.py``, ``python evaluate.py``, ``python -m ttvis.plot`` and ``python -m
    ttvis.view`` with no arguments all read the bundled demo run that ``conf/demo/default.yaml``
    describes."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(name, return_hydra_config=False)
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["content_path"].startswith("${ttvis.demo_run:${demo.cache_dir}")
    assert cfg.demo.data == "digits" and cfg.demo.recipe == "adam" and cfg.demo.epochs == 10


def test_resume_fingerprint_ignores_how_steps_run_but_not_what_they_do(demo_run):
    """``method.step_graph`` (like the devices) leaves finished epochs resumable; a loss weight
    retrains them."""
    from ttvis.resume import settings_fingerprint

    def fingerprint(*extra: str) -> str:
        return settings_fingerprint(_compose("dvi", "default", demo_run, list(extra)))

    default = fingerprint()
    assert fingerprint("method.step_graph=false") == default
    assert fingerprint("trainer.accelerator=cpu") == default
    assert fingerprint("method.lambda1=0.5") != default
