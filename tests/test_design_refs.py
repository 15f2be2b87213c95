"""Every ``§`` reference in the repository resolves to a numbered heading of docs/design.md."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO_ROOT

DESIGN = REPO_ROOT / "docs" / "design.md"
REFERENCE = re.compile(r"§(\d+(?:\.\d+)*)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", re.MULTILINE)
# The starting specification outside the repository, which references must no longer cite.
OUTSIDE = "DESIGN" + ".md"
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg")


def _tracked_text_files() -> list:
    """The repository's text files: tracked and untracked-but-not-ignored."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [REPO_ROOT / n for n in names if n.endswith(TEXT_SUFFIXES) and (REPO_ROOT / n).is_file()]


def test_design_headings_are_numbered():
    headings = HEADING.findall(DESIGN.read_text())
    assert {"1", "2", "4.3", "5.3", "7", "8"} <= set(headings)
    assert len(headings) == len(set(headings)), "a section number is used twice"


def test_every_section_reference_resolves():
    headings = set(HEADING.findall(DESIGN.read_text()))
    dangling = []
    for path in _tracked_text_files():
        for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            dangling += [
                f"{path.relative_to(REPO_ROOT)}:{lineno}: §{ref}"
                for ref in REFERENCE.findall(line)
                if ref not in headings
            ]
    assert not dangling, "references to no heading of docs/design.md:\n" + "\n".join(dangling)


def test_nothing_cites_a_design_file_outside_the_repository():
    outside = [
        str(path.relative_to(REPO_ROOT))
        for path in _tracked_text_files()
        if OUTSIDE in path.read_text(errors="replace")
    ]
    assert not outside, f"cite docs/design.md instead of {OUTSIDE} in {outside}"
