"""Non-parametric UMAP layouts of a complex: targets for the DVI encoder (docs/design.md §4.4).

A network trained by sampling the UMAP loss edge by edge keeps far fewer neighbours than
UMAP's own optimiser placing each sample freely on the same graph (docs/results.md), and needs
hundreds of edge draws per sample to get there. umap-learn's optimiser lays the training points
out in seconds; the encoder then only has to reproduce those positions, a regression it learns
in a few visualizer epochs. Only a fit from scratch gets a layout (docs/results.md: it keeps
more neighbours and fewer predictions, so it is off by default).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse

from ttvis.numba_cache import prepare_numba

log = logging.getLogger(__name__)


def umap_layout(
    x: np.ndarray,
    graph: scipy.sparse.coo_matrix,
    n_epochs: int | None,
    a: float,
    b: float,
    repulsion_strength: float = 1.0,
    negative_sample_rate: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """umap-learn's embedding of the fuzzy simplicial set ``graph``, from its spectral
    initialisation (umap-learn rescales any given start to its own box, so none is offered).

    Args:
        x: ``[N, D]`` the points (spectral initialisation reads them for disconnected graphs).
        graph: ``[N, N]`` unpruned membership graph (:func:`ttvis.complex.fuzzy_complex`).
        n_epochs: optimisation epochs; None: umap-learn's default (500 up to 10,000 points,
            200 above).
        a, b: the curve ``1 / (1 + a d^(2b))`` (:func:`ttvis.modules.losses.umap_ab`).
        repulsion_strength: weight of the negative samples (umap's ``gamma``).
        negative_sample_rate: negatives per positive edge.
        seed: random state of the initialisation and the negative sampling.

    Returns:
        ``[N, 2]`` float32 positions, in the units of the UMAP loss.
    """
    import umap
    from umap.umap_ import simplicial_set_embedding

    prepare_numba(umap)
    start = time.perf_counter()
    embedding, _ = simplicial_set_embedding(
        data=x,
        graph=graph.tocoo(copy=True),  # umap zeroes light edges in place
        n_components=2,
        initial_alpha=1.0,
        a=a,
        b=b,
        gamma=repulsion_strength,
        negative_sample_rate=negative_sample_rate,
        n_epochs=n_epochs,
        init="spectral",
        random_state=np.random.RandomState(seed),
        metric="euclidean",
        metric_kwds={},
        densmap=False,
        densmap_kwds={},
        output_dens=False,
    )
    log.debug(
        "UMAP layout of %d points, %s epochs (%.1fs)",
        x.shape[0],
        n_epochs,
        time.perf_counter() - start,
    )
    return np.asarray(embedding, dtype=np.float32)
