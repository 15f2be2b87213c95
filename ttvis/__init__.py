"""ttvis: time-travelling visualizers (DVI, TimeVis) for deep-learning training runs."""

from ttvis.numba_cache import use_cache_dir
from ttvis.resolvers import register_resolvers

use_cache_dir()  # before numba is imported (by pynndescent and umap)
register_resolvers()

__version__ = "0.1.0"
