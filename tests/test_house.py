"""House rules a newcomer relies on (issue 17): no function over 60 lines and no module over
600 lines in the package and the entry points."""

import ast
from pathlib import Path

from conftest import REPO_ROOT

SOURCES = sorted((REPO_ROOT / "ttvis").rglob("*.py")) + [
    REPO_ROOT / "train.py",
    REPO_ROOT / "evaluate.py",
]
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600


def long_functions(path: Path, limit: int) -> list[tuple[int, str, int]]:
    """``(line, name, length)`` of each function or method of ``path`` longer than ``limit``
    lines, counted from its ``def`` line to its last line (docstring included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > limit:
                found.append((node.lineno, node.name, length))
    return found


def test_no_function_over_60_lines():
    found = [
        f"{path.relative_to(REPO_ROOT)}:{line} {name} ({length} lines)"
        for path in SOURCES
        for line, name, length in long_functions(path, MAX_FUNCTION_LINES)
    ]
    assert not found, "split into named helpers:\n" + "\n".join(found)


def test_no_module_over_600_lines():
    sizes = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in SOURCES}
    found = [
        f"{path.relative_to(REPO_ROOT)} ({n} lines)"
        for path, n in sizes.items()
        if n > MAX_MODULE_LINES
    ]
    assert not found, "split by responsibility:\n" + "\n".join(found)


def test_the_check_sees_a_long_method(tmp_path):
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = tmp_path / "probe.py"
    source.write_text(
        f"class A:\n    def long(self):\n{body}\n\n    def short(self):\n        pass\n"
    )
    assert long_functions(source, MAX_FUNCTION_LINES) == [(2, "long", MAX_FUNCTION_LINES + 1)]
