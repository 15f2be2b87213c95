"""The commands, defined once: ``train.py``, ``evaluate.py`` and ``python -m ttvis.plot`` run
these, and so do the console scripts ``ttvis-train``, ``ttvis-evaluate`` and ``ttvis-plot``
(``pyproject.toml``).

Each composes its config from ``conf/`` (``config.yaml``, ``evaluate.yaml``, ``plot.yaml``) and
the Hydra command line, then runs inside :func:`ttvis.failure.exit_on_failure`: one line and
exit status 2 for bad settings, input or exports, 1 for a diverged training (docs/design.md
§9). Heavy modules are imported inside the commands, after the settings are checked.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ttvis.failure import exit_on_failure

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _program(default: str) -> str:
    """The command's name in error lines: the console script's (``ttvis-train``) when run as
    one, else ``default`` (``train.py``)."""
    name = Path(sys.argv[0]).name
    return name if name.startswith("ttvis-") else default


def _run_hydra(app: Callable[[DictConfig], Any], config_name: str) -> None:
    """Run ``app`` as a Hydra application on ``conf/{config_name}.yaml``."""
    import hydra

    hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(app)()


def train() -> None:
    """``python train.py`` / ``ttvis-train``: fit a visualizer on one run and export it."""
    _run_hydra(train_app, "config")


def evaluate() -> None:
    """``python evaluate.py`` / ``ttvis-evaluate``: measure exported visualizers."""
    _run_hydra(evaluate_app, "evaluate")


def plot() -> None:
    """``python -m ttvis.plot`` / ``ttvis-plot``: re-draw pictures from exports."""
    _run_hydra(plot_app, "plot")


def train_app(cfg: DictConfig) -> float | None:
    """Validate the run and the settings, fit, export; return the last final loss (what a
    Hydra sweeper would minimise)."""
    from ttvis.preflight import open_run

    with exit_on_failure(cfg, _program("train.py")):  # exit 2: bad input or settings, 1: diverged
        run = open_run(cfg)  # before the imports below, which take seconds
        from ttvis.console import quiet_console
        from ttvis.training import train as fit  # torch, Lightning, numba-compiled UMAP, ...

        quiet_console()
        summary = fit(cfg, run)
    losses = [v for v in summary["epochs"].values() if v is not None]
    return losses[-1] if losses else None


def vis_names(cfg: DictConfig) -> str | list:
    """``cfg.vis`` as :meth:`ExportFolder.named` takes it: a name, a comma-separated string
    or a list of names."""
    return OmegaConf.to_object(cfg.vis) if OmegaConf.is_list(cfg.vis) else str(cfg.vis)


def named_folders(cfg: DictConfig) -> list:
    """The export folders ``cfg.vis`` names in ``cfg.content_path``, or ``cfg.output_dir`` when
    exports were written elsewhere."""
    from ttvis.export_folder import ExportFolder

    return ExportFolder.named(cfg.content_path, vis_names(cfg), cfg.get("output_dir"))


def evaluate_app(cfg: DictConfig) -> None:
    """Check the settings, then evaluate every export folder ``cfg.vis`` names."""
    from ttvis.config_check import EVALUATE_RULES, check_config

    with exit_on_failure(cfg, _program("evaluate.py")):  # exit 2: bad settings, input, exports
        check_config(cfg, EVALUATE_RULES)
        evaluate_folders(cfg)


def evaluate_folders(cfg: DictConfig) -> None:
    """Evaluate every export folder ``cfg.vis`` names; print tables, write metrics.json."""
    from ttvis.evaluation import evaluate_visualization
    from ttvis.metrics_report import format_comparison, format_table, write_tensorboard_scalars
    from ttvis.run import TrainingRun

    folders = named_folders(cfg)
    run = TrainingRun(cfg.content_path)
    for folder in folders:  # fail before any work when one of several has no export
        folder.require_epochs(run.epochs)
    every = []
    for folder in folders:
        results = evaluate_visualization(
            run,
            folder,
            k=cfg.k,
            device=cfg.device,
            batch_size=cfg.batch_size,
            max_linear_residual=cfg.max_linear_residual,
            boundary_fraction=cfg.boundary.fraction,
            boundary_delta=cfg.boundary.delta,
            boundary_steps=cfg.boundary.steps,
            seed=cfg.seed,
        )
        every.append(results)
        if len(folders) == 1:
            print(format_table(results))
        print(f"wrote {folder.write_metrics(results)}", flush=True)
        if cfg.get("tensorboard_dir"):
            log_dir = write_tensorboard_scalars(results, cfg.tensorboard_dir)
            print(f"logged {folder.name} metrics to TensorBoard in {log_dir}", flush=True)
    if len(folders) > 1:  # one side-by-side table: epoch x metric rows, a column per method
        print(format_comparison(every))


def plot_app(cfg: DictConfig) -> None:
    """Check the settings, then re-draw every named export folder's pictures."""
    from ttvis.config_check import PLOT_COMMAND_RULES, check_config
    from ttvis.plot import PlotSettings, draw_run
    from ttvis.run import TrainingRun, selected_epochs

    with exit_on_failure(cfg, _program("ttvis.plot")):  # exit 2: bad settings, input, exports
        check_config(cfg, PLOT_COMMAND_RULES)
        folders = named_folders(cfg)
        settings = PlotSettings.from_mapping(cfg.plots)
        epochs = selected_epochs(cfg.get("epochs"))
        run = TrainingRun(cfg.content_path, epochs=epochs, check_values=False)
        for folder in folders:  # fail before drawing when one has no export
            folder.require_epochs(run.epochs)
        for folder in folders:
            drawn, animation = draw_run(run, folder.path, settings, folder.name)
            print(f"wrote {len(drawn)} plots to {folder.plots_dir} and {animation}", flush=True)


def view() -> None:
    """``python -m ttvis.view`` / ``ttvis-view``: write the interactive viewer and show it."""
    _run_hydra(view_app, "view")


def view_app(cfg: DictConfig) -> None:
    """Check the settings, the run and every named export folder, write the viewer (nothing
    is written before all of it is read), then open or serve it."""
    from ttvis.config_check import VIEW_RULES, check_config

    with exit_on_failure(cfg, _program("ttvis.view")):  # exit 2: bad settings, input, exports
        check_config(cfg, VIEW_RULES)
        index = write_view(cfg)
        show_view(cfg, index)


def write_view(cfg: DictConfig) -> Path:
    """Read ``cfg``'s run and export folders and write the viewer; return its index.html."""
    from ttvis.export_folder import EXPORT_ROOT, ExportFolder
    from ttvis.run import TrainingRun, selected_epochs
    from ttvis.view import collect_view_data, write_viewer
    from ttvis.view.page import check_output_dir

    run = TrainingRun(cfg.content_path, epochs=selected_epochs(cfg.epochs), check_values=False)
    folders = ExportFolder.named(run.content_path, vis_names(cfg), cfg.get("export_dir"))
    out_dir = cfg.output_dir or run.content_path / EXPORT_ROOT / cfg.view_name
    check_output_dir(out_dir)  # before reading the exports: a read-only run fails at once
    data = collect_view_data(run, folders, cfg.page.list_size)
    page = OmegaConf.to_container(cfg.page, resolve=True)
    index = write_viewer(data, out_dir, page)
    names = ", ".join(f.name for f in folders)
    print(f"wrote {index} ({names}; {len(data.epochs)} epochs, {data.n_samples} samples)")
    return index


def show_view(cfg: DictConfig, index: Path) -> None:
    """Serve the viewer's folder (``serve=true``) or open ``index`` in a browser (``open``)."""
    from ttvis.view.serve import open_page, serve_folder

    if cfg.serve:
        serve_folder(index.parent, cfg.host, cfg.port, bool(cfg.open))
    elif cfg.open and not open_page(index.as_uri()):
        print(f"no browser here: open {index.as_uri()} elsewhere, or serve it with serve=true")
