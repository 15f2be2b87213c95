"""The interactive viewer (docs/design.md §11): ``python -m ttvis.view content_path=...``.

It writes a self-contained folder (``content_path/visualize/view/`` by default)::

    index.html, *.js, viewer.css        the page (ttvis/view/static/, shipped with the package)
    data/manifest.js                    epochs, class names, scales, accuracies, metrics, lists
    data/samples.js                     labels and the train/test split of every sample
    data/epoch_{e}.js                   one epoch: predictions, confidences, 2-D positions
    bg/{vis}/{e}.png                    the exported backgrounds, copied

Each ``.js`` data file calls ``ttvisRegister({...})`` with its arrays as base64 of their
little-endian bytes, so the page opens from ``file://`` (browsers refuse ``fetch`` there).

Modules: :mod:`ttvis.view.data` reads and checks the run and its exports into a
:class:`~ttvis.view.data.ViewData`; :mod:`ttvis.view.page` writes the folder atomically;
:mod:`ttvis.view.serve` opens or serves it; :mod:`ttvis.view.headless` drives the page in
headless Chromium for the tests and the frame-time benchmark.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ViewData", "VisData", "collect_view_data", "write_viewer"]


def __getattr__(name: str) -> Any:
    """The public names, imported on first use: ``python -m ttvis.view`` checks its settings
    before numpy, torch and the readers are loaded."""
    if name in ("ViewData", "VisData", "collect_view_data"):
        from ttvis.view import data

        return getattr(data, name)
    if name == "write_viewer":
        from ttvis.view.page import write_viewer

        return write_viewer
    raise AttributeError(f"module 'ttvis.view' has no attribute {name!r}")
