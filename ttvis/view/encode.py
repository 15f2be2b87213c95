"""The viewer's data files: JavaScript that hands arrays to the page (docs/design.md §11).

A browser refuses ``fetch`` and ``XMLHttpRequest`` of ``file://`` URLs, but runs a
``<script src>``. So each data file is one call, ``ttvisRegister({...});``, whose argument is
JSON; arrays in it are ``{"dtype", "shape", "b64"}``: base64 of the array's little-endian bytes,
which the page turns into a typed array of that dtype without copying values one by one.

Files (names relative to the viewer folder):

* ``data/manifest.js``: ``kind "manifest"``, the small things (epochs, class names, colours,
  scales, background paths, accuracies, metrics, lists, page settings, the other files).
* ``data/samples.js``: ``kind "samples"``, ``labels`` and ``split`` (``[N]``).
* ``data/epoch_{e}.js``: ``kind "epoch"``, ``prediction`` and ``confidence`` (``[N]``) and
  ``positions``, one float32 ``[P, 2]`` per visualizer.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ttvis.view.data import SPLIT_CODES, ViewData

__all__ = ["REGISTER", "data_files", "decode_array", "encode_array", "read_register_call"]

REGISTER = "ttvisRegister"  # the page's function each data file calls
DATA_DIR = "data"
MANIFEST = f"{DATA_DIR}/manifest.js"
SAMPLES = f"{DATA_DIR}/samples.js"
FORMAT_VERSION = 1
DTYPES = ("uint8", "uint16", "int32", "float32")  # what the page decodes


def encode_array(array: np.ndarray) -> dict[str, Any]:
    """``{"dtype", "shape", "b64"}`` of a ``uint8``/``uint16``/``int32``/``float32`` array,
    its bytes little-endian and C-ordered."""
    array = np.asarray(array)
    if array.dtype.name not in DTYPES:
        raise TypeError(f"dtype {array.dtype}: expected one of {', '.join(DTYPES)}")
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    return {
        "dtype": array.dtype.name,
        "shape": list(array.shape),
        "b64": base64.b64encode(data).decode("ascii"),
    }


def decode_array(obj: Mapping[str, Any]) -> np.ndarray:
    """The array :func:`encode_array` encoded (the inverse, for tests and tools)."""
    dtype = np.dtype(obj["dtype"]).newbyteorder("<")
    data = base64.b64decode(obj["b64"])
    return np.frombuffer(data, dtype=dtype).reshape(obj["shape"]).astype(obj["dtype"])


def register_call(payload: Mapping[str, Any]) -> str:
    """The text of a data file: ``ttvisRegister(<payload as JSON>);``."""
    return f"{REGISTER}({json.dumps(payload, separators=(',', ':'), allow_nan=False)});\n"


def read_register_call(text: str) -> dict[str, Any]:
    """The payload of a data file's text (the inverse of :func:`register_call`)."""
    head, tail = f"{REGISTER}(", ");"
    body = text.strip()
    if not (body.startswith(head) and body.endswith(tail)):
        raise ValueError(f"not a {REGISTER}(...) call")
    return json.loads(body[len(head) : -len(tail)])


def epoch_file(epoch: int) -> str:
    """The data file of ``epoch``, relative to the viewer folder."""
    return f"{DATA_DIR}/epoch_{epoch}.js"


def background_file(vis_index: int, epoch: int) -> str:
    """Where the viewer keeps a background copy: ``bg/{visualizer's position}/{epoch}.png``
    (folder names of sweep jobs hold characters a URL would have to escape)."""
    return f"bg/{vis_index}/{epoch}.png"


def manifest(data: ViewData, page: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's payload: everything but the per-sample arrays.

    Args:
        data: what the viewer shows.
        page: the page's settings (``conf/view.yaml``'s ``page`` block), passed through.
    """
    names = [vis.name for vis in data.visualizers]
    return {
        "kind": "manifest",
        "version": FORMAT_VERSION,
        "title": f"{data.content_path.name} · {' | '.join(names)}",
        "content_path": str(data.content_path),
        "epochs": data.epochs,
        "classes": data.classes,
        "palette": data.palette,
        "n_samples": data.n_samples,
        "n_features": data.n_features,
        "split_codes": SPLIT_CODES,
        "accuracy": {str(e): data.accuracy[e] for e in data.epochs},
        "flips": data.flips,
        "visualizers": [
            {
                "name": vis.name,
                "scales": {str(e): [float(v) for v in vis.scales[e]] for e in data.epochs},
                "backgrounds": {str(e): background_file(i, e) for e in data.epochs},
                "metrics": vis.metrics,
                "moves": vis.moves,
            }
            for i, vis in enumerate(data.visualizers)
        ],
        "page": dict(page),
        "files": [SAMPLES, *(epoch_file(e) for e in data.epochs)],
    }


def data_files(data: ViewData, page: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """``(relative path, text)`` of every data file, one at a time (an epoch's arrays are
    encoded only when its turn comes, so memory holds one epoch's text)."""
    yield MANIFEST, register_call(manifest(data, page))
    samples = {"kind": "samples", "labels": encode_array(data.labels)}
    samples["split"] = encode_array(data.split)
    yield SAMPLES, register_call(samples)
    for epoch in data.epochs:
        payload = {
            "kind": "epoch",
            "epoch": epoch,
            "prediction": encode_array(data.predictions[epoch]),
            "confidence": encode_array(data.confidence[epoch]),
            "positions": [encode_array(vis.positions[epoch]) for vis in data.visualizers],
        }
        yield epoch_file(epoch), register_call(payload)
