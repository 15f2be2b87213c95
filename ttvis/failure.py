"""One failure path for the commands (``train.py``, ``evaluate.py``, ``python -m ttvis.plot``).

Inside :func:`exit_on_failure`, an error the user can fix ends the command with one line on
stderr, ``{program}: {message}``, and an exit status (docs/design.md §9): 2 for bad input, bad
settings or missing exports, 1 for a diverged training. With ``debug=true`` the error is
raised instead, traceback and all. Other exceptions (bugs) always propagate.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping

# (module, class name, exit status). Looked up in sys.modules when an error arrives, so this
# module imports nothing heavy: an error of a module never imported cannot have been raised.
FAILURES: tuple[tuple[str, str, int], ...] = (
    ("ttvis.config_check", "ConfigError", 2),
    ("ttvis.run", "RunError", 2),
    ("ttvis.export_folder", "ExportError", 2),  # and evaluation.EvaluationError
    ("ttvis.modules.visualizer", "TrainingDiverged", 1),
)


def exit_status(error: BaseException) -> int | None:
    """The exit status :data:`FAILURES` gives ``error``, or None for any other exception."""
    for module_name, class_name, status in FAILURES:
        module = sys.modules.get(module_name)
        cls = getattr(module, class_name, None) if module is not None else None
        if cls is not None and isinstance(error, cls):
            return status
    return None


def one_line(message: str) -> str:
    """``message`` with its lines joined by spaces."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


@contextlib.contextmanager
def exit_on_failure(cfg: Mapping | None, program: str) -> Iterator[None]:
    """Turn a user-fixable error into one stderr line and :func:`exit_status`'s status.

    Args:
        cfg: the command's config; ``cfg.debug`` true re-raises instead.
        program: the command's name at the start of the line (``"train.py"``).
    """
    try:
        yield
    except Exception as error:
        status = exit_status(error)
        if status is None or (cfg is not None and cfg.get("debug")):
            raise
        print(f"{program}: {one_line(str(error))}", file=sys.stderr, flush=True)
        sys.exit(status)
