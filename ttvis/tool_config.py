"""The ``config.json`` entries the original time-travelling visualizer's backend reads.

The original tool's server (its feat/visactor-era ``tool/server``) opens the label file through
``config["dataset"]["attributes"]["label"]["source"]["pattern"]`` (relative to the run folder)
for every projection request, and the prediction file of an epoch through
``attributes["prediction"]["source"]["pattern"]`` with ``${epoch}`` replaced; the front end
asks for ``prediction`` on classification runs and applies a softmax to each row, so the
pattern points at the raw ``[N, C]`` outputs. ``representation`` is read the same way when
asked for. It also reads ``dataset.classes`` and ``dataset.taskType``. Without these entries
every call but the epoch list fails with a server error. ttvis itself needs none of them.

Command line (the only thing here that writes, and only when asked)::

    python -m ttvis.tool_config content_path=RUN

adds the missing entries to ``RUN/config.json`` (creating it if absent), keeping the previous
file as ``config.json.bak`` (``.bak1``, ``.bak2``, ... when that exists). ``train.py`` never
modifies its input.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path

from ttvis.export import atomic_write_text
from ttvis.run import (
    CONFIG_FILE,
    INDEX_FILE,
    LABELS_FILE,
    PREDICTION_DIR,
    REPRESENTATION_DIR,
    RunError,
    TrainingRun,
)

log = logging.getLogger(__name__)

# The placeholder the original tool's backend replaces with the epoch number in a pattern.
EPOCH_PLACEHOLDER = "${epoch}"
BACKUP_SUFFIX = ".bak"


def tool_attributes() -> dict[str, dict]:
    """``dataset.attributes`` for the seed layout, as the original tool's backend reads them.

    Returns:
        ``{"label", "prediction", "representation"} -> {"dataType", "source": {"type",
        "pattern"}}``; patterns are relative to the run folder, per-epoch ones hold
        ``${epoch}``.
    """

    def entry(pattern: Path | str, per_epoch: bool) -> dict:
        return {
            "dataType": "npy",
            "source": {"type": "folder" if per_epoch else "file", "pattern": str(pattern)},
        }

    return {
        "label": entry(LABELS_FILE, per_epoch=False),
        "prediction": entry(f"{PREDICTION_DIR}/{EPOCH_PLACEHOLDER}.npy", per_epoch=True),
        "representation": entry(f"{REPRESENTATION_DIR}/{EPOCH_PLACEHOLDER}.npy", per_epoch=True),
    }


def with_tool_entries(config: dict, task_type: str | None, classes: list[str]) -> dict:
    """A copy of ``config`` with the entries the original tool needs added where missing.

    Args:
        config: the run's ``config.json`` content (``{}`` when there is none).
        task_type: ``dataset.taskType`` to set when absent (None: leave it absent).
        classes: ``dataset.classes`` to set when absent, ``[C]`` names.

    Returns:
        The new content; entries the user already wrote are kept as they are.
    """
    out = copy.deepcopy(config)
    dataset = out.setdefault("dataset", {})
    if task_type is not None:
        dataset.setdefault("taskType", task_type)
    dataset.setdefault("classes", list(classes))
    attributes = dataset.setdefault("attributes", {})
    for name, value in tool_attributes().items():
        attributes.setdefault(name, value)
    return out


def _backup_path(path: Path) -> Path:
    candidate = path.with_name(path.name + BACKUP_SUFFIX)
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}{BACKUP_SUFFIX}{number}")
        number += 1
    return candidate


def _index_is_tool_ordered(run: TrainingRun) -> bool:
    """True when ``index.json`` lists train then test as rows ``0..N-1`` in order, which the
    original tool's server-side label filter assumes (it zips ``train + test`` with the
    labels)."""
    order = [*run.train_index.tolist(), *run.test_index.tolist()]
    return order == list(range(run.shape.n_samples))


def add_tool_config(content_path: str | Path) -> Path | None:
    """Add the original tool's entries to ``content_path/config.json``, keeping a backup.

    Args:
        content_path: a run folder that passes :class:`~ttvis.run.TrainingRun` validation.

    Returns:
        The backup's path, or None when there was no previous file or nothing to add.

    Raises:
        RunError: the folder is not a valid run, or ``config.json`` is not a JSON object.
    """
    run = TrainingRun(content_path, check_values=False)
    path = run.content_path / CONFIG_FILE
    old = None
    if path.exists():
        old = json.loads(path.read_text())  # valid: TrainingRun parsed it
        if not isinstance(old, dict):
            raise RunError(f"{path}: expected a JSON object, found {type(old).__name__}")
    new = with_tool_entries(old or {}, run.task_type, run.classes)
    if not (run.content_path / INDEX_FILE).exists():
        log.warning("%s: missing; the original tool's train/test filters need it", INDEX_FILE)
    elif not _index_is_tool_ordered(run):
        log.warning(
            "%s: train and test are not rows 0..N-1 in order; the original tool's label and "
            "prediction filters will pick the wrong samples",
            run.content_path / INDEX_FILE,
        )
    if new == old:
        log.info("%s already holds the original tool's entries; nothing changed", path)
        return None
    backup = None
    if old is not None:
        backup = _backup_path(path)
        atomic_write_text(backup, path.read_text())
    atomic_write_text(path, json.dumps(new, indent=2) + "\n")
    log.info("%s: original tool's entries added%s", path, f" (backup {backup})" if backup else "")
    return backup


def main(argv: list[str] | None = None) -> int:
    """``python -m ttvis.tool_config content_path=RUN``; returns the exit status (2: bad input)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = dict(a.split("=", 1) for a in args if "=" in a)
    unknown = [a for a in args if "=" not in a] + sorted(set(settings) - {"content_path"})
    if unknown or "content_path" not in settings:
        print("usage: python -m ttvis.tool_config content_path=RUN", file=sys.stderr)
        return 2
    try:
        add_tool_config(Path(settings["content_path"]).expanduser())
    except (RunError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
