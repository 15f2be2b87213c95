"""numba made ready for use: its compiled functions kept on disk, so only the first run on a
machine compiles them, and its thread pool started without changing torch's.

pynndescent (k-NN) and umap-learn (the fuzzy simplicial set) are numba code; compiling it took
~50 s of the first complex in every process. :func:`use_cache_dir` (called when ``ttvis`` is
imported, before numba is) points ``NUMBA_CACHE_DIR`` at ``{TTVIS_CACHE_DIR}/numba`` (default
``~/.cache/ttvis/numba``) unless it is already set; :func:`prepare_numba`, called before each
use of a numba package, then turns numba's on-disk cache on for every compiled function of
pynndescent and umap (most are compiled without it) and gives each a stable identity, so the
functions that take another compiled function as an argument (the distance) are found again by
the next process. The few that numba
cannot cache (those with array default arguments) are compiled in every process (~5 s).
The folder holds a few MB per library version and CPU; deleting it only costs one compile.

numba's OpenMP threading layer shares torch's OpenMP runtime, and starting its thread pool (once
per process, at the first parallel function) sets OpenMP's thread count to
``NUMBA_NUM_THREADS`` (every core): torch's count too. A process told to train on fewer threads
(``OMP_NUM_THREADS``, ``torch.set_num_threads``, Lightning's DDP on CPU, which gives each process
its share of the cores) then trained on every core after its first complex, and processes
sharing a machine oversubscribed it (two one-thread processes on two cores ran 4.5x slower each).
:func:`start_numba_threads` starts the pool and puts torch's count back.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

CACHE_ENV = "TTVIS_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/ttvis"
NUMBA_ENV = "NUMBA_CACHE_DIR"
_done: set[str] = set()
_threads_started = False


def numba_cache_dir() -> Path:
    """Where numba's cache goes: ``$NUMBA_CACHE_DIR``, else ``{TTVIS_CACHE_DIR}/numba``."""
    if os.environ.get(NUMBA_ENV):
        return Path(os.environ[NUMBA_ENV])
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser() / "numba"


def use_cache_dir() -> None:
    """Set ``NUMBA_CACHE_DIR`` (see :func:`numba_cache_dir`) unless set; before numba's import,
    which reads it. A folder that cannot be created or written is left out (numba's own
    default then applies): numba fails on saving into one."""
    if not os.environ.get(NUMBA_ENV):
        folder = numba_cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return
        if not os.access(folder, os.W_OK | os.X_OK):
            return
        os.environ[NUMBA_ENV] = str(folder)
        if "numba" in sys.modules:  # too late for numba's config: tell it now
            from numba.core import config

            config.reload_config()


def prepare_numba(package: ModuleType) -> None:
    """Make ``package``'s numba code (``pynndescent``, ``umap``) ready to run in this process:
    its compiled functions cached on disk (:func:`cache_compiled_functions`) and numba's
    thread pool started with torch's thread count kept (:func:`start_numba_threads`)."""
    cache_compiled_functions(package)
    start_numba_threads()


def start_numba_threads() -> None:
    """Start numba's thread pool now (once per process), then set torch's intra-op thread
    count back to what it was: with numba's OpenMP layer the start sets it to
    ``NUMBA_NUM_THREADS`` (see the module docstring). Later numba calls leave it alone."""
    global _threads_started
    if _threads_started:
        return
    import numba
    import torch

    threads = torch.get_num_threads()
    numba.get_num_threads()  # launches the pool
    if torch.get_num_threads() != threads:
        log.debug(
            "numba's thread pool set torch's threads to %d; back to %d",
            torch.get_num_threads(),
            threads,
        )
        torch.set_num_threads(threads)
    _threads_started = True


def cache_compiled_functions(package: ModuleType) -> None:
    """Cache on disk every numba-compiled function defined in the imported modules of
    ``package`` (e.g. ``pynndescent``); idempotent, and a no-op if numba's internals differ
    from what this expects (numba 0.6x)."""
    if package.__name__ in _done:
        return
    _done.add(package.__name__)
    try:
        from numba.core.dispatcher import Dispatcher
        from numba.core.errors import NumbaWarning
    except ImportError:
        return
    # numba warns once per function it cannot cache; those were never cached before either.
    warnings.filterwarnings("ignore", "Cannot cache compiled function", NumbaWarning)
    name = package.__name__
    modules = [m for key, m in list(sys.modules.items()) if m and key.split(".")[0] == name]
    count = 0
    for module in modules:
        for attr, value in list(vars(module).items()):
            if not isinstance(value, Dispatcher) or value.py_func.__module__ != module.__name__:
                continue
            try:
                # A stable name instead of numba's random per-process one: compiled code whose
                # signature holds this function (as an argument) is then found again on disk.
                if getattr(value, "_MemoMixin__uuid", "") is None:
                    value._set_uuid(f"ttvis:{module.__name__}.{attr}")
                if type(value._cache).__name__ == "NullCache":
                    value.enable_caching()
                count += 1
            except Exception as err:  # noqa: BLE001 (an internal API changed: stay uncached)
                log.debug("numba cache not enabled for %s.%s: %s", module.__name__, attr, err)
    log.debug("numba cache: %d compiled functions of %s in %s", count, name, numba_cache_dir())
