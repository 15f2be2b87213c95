"""A DVI datamodule that records how many earlier ones are still alive when it is created.

Used by ``tests/test_robustness.py`` through ``train.py`` (``method.datamodule._target_=
memprobe.TrackedDVIDataModule`` with ``tests/`` on ``PYTHONPATH``): each construction appends
``{"epoch": e, "alive": n}`` to the JSON-lines file named by ``$TTVIS_MEMPROBE``.
"""

from __future__ import annotations

import json
import os
import weakref

from ttvis.datamodules import DVIDataModule

_LIVE: weakref.WeakSet = weakref.WeakSet()


class TrackedDVIDataModule(DVIDataModule):
    """:class:`DVIDataModule` that logs the number of live earlier instances on creation."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        with open(os.environ["TTVIS_MEMPROBE"], "a") as fh:
            fh.write(json.dumps({"epoch": self.epoch, "alive": len(_LIVE)}) + "\n")
        _LIVE.add(self)
