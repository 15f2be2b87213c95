"""OmegaConf resolvers that let configs say what code would otherwise hard-wire.

``${ttvis.rep_dim:PATH}``            D of the run's representations, read from one ``.npy`` header.
``${ttvis.encoder_dims:D,HIDDEN,L}``  ``[D, *HIDDEN, L]``.
``${ttvis.decoder_dims:L,HIDDEN,D}``  ``[L, *reversed(HIDDEN), D]``.
``${ttvis.demo_run:CACHE,EPOCHS,SEED,DATA,RECIPE}`` path of a bundled demo run, built on first
    use.
``${ttvis.job_vis_name:NAME}``  ``NAME`` in a single run; in a Hydra multirun job
    ``NAME_OVERRIDES`` (the job's own overrides, commas as "+"), so the jobs of a sweep export
    into different folders.
"""

from __future__ import annotations

import os

from omegaconf import ListConfig, OmegaConf


def _rep_dim(content_path: str) -> int:
    from ttvis.run import representation_dim

    return representation_dim(content_path)


def _encoder_dims(input_dim: int, hidden: ListConfig, latent_dim: int) -> ListConfig:
    return OmegaConf.create([int(input_dim), *(int(h) for h in hidden), int(latent_dim)])


def _decoder_dims(latent_dim: int, hidden: ListConfig, output_dim: int) -> ListConfig:
    dims = [int(latent_dim), *(int(h) for h in reversed(list(hidden))), int(output_dim)]
    return OmegaConf.create(dims)


def _demo_run(
    cache_dir: str, epochs: int = 10, seed: int = 0, data: str = "digits", recipe: str = "adam"
) -> str:
    from ttvis.demo import ensure_demo_run

    path = ensure_demo_run(
        cache_dir, n_epochs=int(epochs), seed=int(seed), data=data, recipe=recipe
    )
    return str(path)


def _job_vis_name(name: str) -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():  # composed outside a Hydra app (tests, notebooks)
        return str(name)
    hydra_cfg = HydraConfig.get()
    overrides = hydra_cfg.job.get("override_dirname")
    if "MULTIRUN" not in str(hydra_cfg.mode) or not overrides:
        return str(name)
    # One folder name (a path-valued override must not add directory levels) without commas
    # (evaluate.py's vis= takes comma-separated names).
    return f"{name}_{overrides}".replace("/", "_").replace(os.sep, "_").replace(",", "+")


def register_resolvers() -> None:
    """Register ttvis's resolvers once per process (safe to call repeatedly)."""
    resolvers = {
        "ttvis.rep_dim": _rep_dim,
        "ttvis.encoder_dims": _encoder_dims,
        "ttvis.decoder_dims": _decoder_dims,
        "ttvis.demo_run": _demo_run,
        "ttvis.job_vis_name": _job_vis_name,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            # job_vis_name reads the current Hydra job, which changes between sweep jobs.
            use_cache = name != "ttvis.job_vis_name"
            OmegaConf.register_new_resolver(name, fn, use_cache=use_cache)
