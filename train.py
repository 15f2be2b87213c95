"""Train a time-travelling visualizer on one training run and export it.

python train.py                                    # the bundled demo run, DVI
python train.py method=dvi content_path=/data/run
python train.py -m content_path=/data/run method.lambda1=0.5,1,2
"""

import logging
import sys

import hydra
from omegaconf import DictConfig

import ttvis  # noqa: F401  (registers the config resolvers)
from ttvis.preflight import open_run
from ttvis.run import RunError

log = logging.getLogger("ttvis")


def _stop(cfg: DictConfig, err: Exception, status: int) -> None:
    """One clear line and exit ``status`` (with ``debug=true``: the traceback)."""
    if cfg.get("debug"):
        raise err
    log.error("%s", err)
    sys.exit(status)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:  # bad input: one clear line, no traceback, nothing written
        run = open_run(cfg)  # before the imports below, which take seconds
    except RunError as err:
        _stop(cfg, err, 2)
    from ttvis.modules import TrainingDiverged  # torch, Lightning
    from ttvis.training import train  # numba-compiled UMAP and pynndescent

    try:
        summary = train(cfg, run)
    except RunError as err:
        _stop(cfg, err, 2)
    except TrainingDiverged as err:  # NaN/inf loss: say where, export nothing further
        _stop(cfg, err, 1)
    losses = [v for v in summary["epochs"].values() if v is not None]
    return losses[-1] if losses else None  # what a Hydra sweeper would minimise


if __name__ == "__main__":
    main()
