"""Write the viewer's folder in one step (docs/design.md §11).

The folder is built under a temporary name next to its destination and renamed into place,
so a reader never sees half a viewer and an interrupted write leaves the old one. An existing
destination is replaced only when it is a viewer folder (it holds ``data/manifest.js``) or
empty: ``output_dir=~`` must never wipe a home folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from ttvis.export import _current_umask
from ttvis.export_folder import ExportError
from ttvis.view.data import ViewData
from ttvis.view.encode import MANIFEST, background_file, data_files

__all__ = ["INDEX", "STATIC_FILES", "check_output_dir", "write_viewer"]

INDEX = "index.html"
# The page's files in ttvis/view/static/, copied into every viewer.
STATIC_FILES = (INDEX, "viewer.css", "viewer.js", "controls.js", "render.js", "hover.js")


def check_output_dir(out_dir: str | Path) -> Path:
    """Raise :class:`ExportError` unless the viewer can be written to ``out_dir``: a new or
    empty folder, or an earlier viewer, under a writable parent. Returns the path."""
    out_dir = Path(out_dir).expanduser().absolute()
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"output_dir={out_dir}: a file; expected a folder for the viewer")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
            raise ExportError(
                f"output_dir={out_dir}: holds files but no {MANIFEST}; expected a new or empty "
                "folder, or an earlier viewer (it is replaced)"
            )
    parent = out_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(
            f"output_dir={out_dir}: {parent} is not writable; set output_dir=/somewhere/writable"
        )
    return out_dir


def write_viewer(data: ViewData, out_dir: str | Path, page: Mapping[str, Any]) -> Path:
    """Write the viewer of ``data`` to ``out_dir`` atomically; return its ``index.html``.

    Args:
        data: what to show (:func:`ttvis.view.data.collect_view_data`).
        out_dir: the viewer's folder (replaced when it holds an earlier viewer).
        page: the page's settings (``conf/view.yaml``'s ``page`` block).
    """
    out_dir = check_output_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o777 & ~_current_umask())
        _copy_static(tmp)
        for name, text in data_files(data, page):
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        for i, vis in enumerate(data.visualizers):
            for epoch, source in vis.backgrounds.items():
                target = tmp / background_file(i, epoch)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
        _replace_folder(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir / INDEX


def _copy_static(target: Path) -> None:
    """Copy the page's files (package data, :data:`STATIC_FILES`) into ``target``."""
    static = resources.files("ttvis.view") / "static"
    for name in STATIC_FILES:
        (target / name).write_bytes((static / name).read_bytes())


def _replace_folder(new: Path, out_dir: Path) -> None:
    """Move ``new`` to ``out_dir``; an earlier ``out_dir`` is moved aside first, then removed."""
    if not out_dir.exists():
        os.replace(new, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, old / out_dir.name)
    os.replace(new, out_dir)
    shutil.rmtree(old, ignore_errors=True)
