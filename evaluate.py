"""Measure the quality of exported visualizers (docs/design.md §7) and write metrics.json.

python evaluate.py content_path=/data/run                      # visualize/DVI
python evaluate.py content_path=/data/run "vis=[DVI,TimeVis]"  # side by side; or vis='DVI,TimeVis'
python evaluate.py content_path=/data/run output_dir=/elsewhere  # exports written with output_dir=

Exits with status 2 and a one-line message when a setting, the run folder or its exports are
unusable (``debug=true``: the traceback instead).
"""

import hydra
from omegaconf import DictConfig, OmegaConf

from ttvis.config_check import EVALUATE_RULES, check_config
from ttvis.evaluation import evaluate_visualization
from ttvis.export_folder import ExportFolder
from ttvis.failure import exit_on_failure
from ttvis.metrics_report import format_comparison, format_table, write_tensorboard_scalars
from ttvis.run import TrainingRun


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with exit_on_failure(cfg, "evaluate.py"):  # exit 2: bad settings, input or exports
        check_config(cfg, EVALUATE_RULES)
        evaluate(cfg)


def evaluate(cfg: DictConfig) -> None:
    """Evaluate every export folder ``cfg.vis`` names; print tables, write metrics.json."""
    vis = OmegaConf.to_object(cfg.vis) if OmegaConf.is_list(cfg.vis) else str(cfg.vis)
    folders = ExportFolder.named(cfg.content_path, vis, cfg.get("output_dir"))
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


if __name__ == "__main__":
    main()
