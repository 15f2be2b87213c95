"""Train a time-travelling visualizer on one training run and export it.

python train.py                                    # the bundled demo run, DVI
python train.py method=dvi content_path=/data/run
python train.py -m content_path=/data/run method.lambda1=0.5,1,2
"""

import hydra
from omegaconf import DictConfig

import ttvis  # noqa: F401  (registers the config resolvers)
from ttvis.failure import exit_on_failure
from ttvis.preflight import open_run


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    with exit_on_failure(cfg, "train.py"):  # exit 2: bad input or settings, 1: diverged
        run = open_run(cfg)  # before the imports below, which take seconds
        from ttvis.training import train  # torch, Lightning, numba-compiled UMAP, pynndescent

        summary = train(cfg, run)
    losses = [v for v in summary["epochs"].values() if v is not None]
    return losses[-1] if losses else None  # what a Hydra sweeper would minimise


if __name__ == "__main__":
    main()
