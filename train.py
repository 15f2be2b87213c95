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
from ttvis.modules import TrainingDiverged
from ttvis.run import RunError
from ttvis.training import train

log = logging.getLogger("ttvis")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = train(cfg)
    except RunError as err:  # bad input: one clear line, no traceback, nothing written
        if cfg.get("debug"):
            raise
        log.error("%s", err)
        sys.exit(2)
    except TrainingDiverged as err:  # NaN/inf loss: say where, export nothing further
        if cfg.get("debug"):
            raise
        log.error("%s", err)
        sys.exit(1)
    losses = [v for v in summary["epochs"].values() if v is not None]
    return losses[-1] if losses else None  # what a Hydra sweeper would minimise


if __name__ == "__main__":
    main()
