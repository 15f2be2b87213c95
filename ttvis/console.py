"""A console that carries ttvis's own lines: Lightning's advertising tips, its per-fit "stopped"
line and its device banner repeated for every subject epoch, and third-party warnings about
their own internals are left out (``train.py``; docs/design.md §9).

Only what a user can do nothing about is dropped: warnings about the user's settings and data,
and every ttvis line, stay.
"""

from __future__ import annotations

import logging
import warnings

# Lightning's info lines that say nothing about this run.
DROPPED = ("💡 Tip:", "`Trainer.fit` stopped:")
# Lightning's device banner: written by every Trainer (one per DVI subject epoch); kept once.
ONCE = ("GPU available:", "TPU available:", "HPU available:")
# Warnings about third-party internals or about ttvis's design, not about the user's run:
# torch's pytree deprecation that Lightning triggers, and the subject head, frozen in eval mode
# on purpose, reported as "modules in eval mode at the start of training".
IGNORED_WARNINGS = (r".*isinstance\(treespec, LeafSpec\)", r"Found \d+ module\(s\) in eval mode")


class LightningNoiseFilter(logging.Filter):
    """Drops :data:`DROPPED` lines and repeats of :data:`ONCE` lines."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith(DROPPED):
            return False
        for banner in ONCE:
            if message.startswith(banner):
                if banner in self._seen:
                    return False
                self._seen.add(banner)
        return True


def quiet_console() -> None:
    """Install the filters (idempotent); call after Lightning is imported."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, LightningNoiseFilter) for f in rank_zero.filters):
        rank_zero.addFilter(LightningNoiseFilter())
    # Lightning gives its package logger a console handler of its own; where the application
    # configured logging (Hydra: console and log file), every Lightning line came out twice.
    if logging.getLogger().hasHandlers():
        package = logging.getLogger("lightning")
        for handler in list(package.handlers):
            if type(handler) is logging.StreamHandler:
                package.removeHandler(handler)
    for message in IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
