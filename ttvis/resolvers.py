"""OmegaConf resolvers that let configs say what code would otherwise hard-wire.

``${ttvis.rep_dim:PATH}``            D of the run's representations, read from one ``.npy`` header.
``${ttvis.encoder_dims:D,HIDDEN,L}``  ``[D, *HIDDEN, L]``.
``${ttvis.decoder_dims:L,HIDDEN,D}``  ``[L, *reversed(HIDDEN), D]``.
``${ttvis.demo_run:CACHE,EPOCHS,SEED}`` path of the bundled demo run, built on first use.
"""

from __future__ import annotations

from omegaconf import ListConfig, OmegaConf


def _rep_dim(content_path: str) -> int:
    from ttvis.run import representation_dim

    return representation_dim(content_path)


def _encoder_dims(input_dim: int, hidden: ListConfig, latent_dim: int) -> ListConfig:
    return OmegaConf.create([int(input_dim), *(int(h) for h in hidden), int(latent_dim)])


def _decoder_dims(latent_dim: int, hidden: ListConfig, output_dim: int) -> ListConfig:
    dims = [int(latent_dim), *(int(h) for h in reversed(list(hidden))), int(output_dim)]
    return OmegaConf.create(dims)


def _demo_run(cache_dir: str, epochs: int = 10, seed: int = 0) -> str:
    from ttvis.demo import ensure_demo_run

    return str(ensure_demo_run(cache_dir, n_epochs=int(epochs), seed=int(seed)))


def register_resolvers() -> None:
    """Register ttvis's resolvers once per process (safe to call repeatedly)."""
    resolvers = {
        "ttvis.rep_dim": _rep_dim,
        "ttvis.encoder_dims": _encoder_dims,
        "ttvis.decoder_dims": _decoder_dims,
        "ttvis.demo_run": _demo_run,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=True)
