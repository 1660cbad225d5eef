"""The README's layout section lists exactly the package's stages and modules, and its doc links exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "nerveseg"
TOP = "(top level)"


def listed_layout(readme: str) -> dict[str, set[str]]:
    """stage -> module names, from the block between the layout markers (continuation lines included)."""
    block = readme.split("<!-- layout:start -->")[1].split("<!-- layout:end -->")[0]
    layout: dict[str, set[str]] = {}
    stage = None
    for line in block.splitlines():
        if not line.startswith("  "):  # the fence and the root line
            continue
        match = re.match(r"  (\S+/|\(top level\))\s+(.*)", line)
        if match:
            stage, rest = match.group(1).rstrip("/"), match.group(2)
        else:
            rest = line
        layout.setdefault(stage, set()).update(name.strip() for name in rest.split(",") if name.strip())
    return layout


def actual_layout() -> dict[str, set[str]]:
    """stage -> its modules and its sub-packages (``toy/``); a sub-package with modules is a stage of its own
    (``tasks/toy``)."""
    layout: dict[str, set[str]] = {TOP: {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}}
    for folder in sorted(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE):
        modules = {p.stem for p in folder.glob("*.py") if p.stem != "__init__"}
        packages = {f"{p.name}/" for p in folder.iterdir() if (p / "__init__.py").is_file()}
        if modules or packages or folder.parent == PACKAGE:
            layout[folder.relative_to(PACKAGE).as_posix()] = modules | packages
    return layout


def test_the_readme_layout_matches_the_package() -> None:
    listed = listed_layout((ROOT / "README.md").read_text())
    assert listed == actual_layout()


def test_every_linked_doc_exists() -> None:
    for doc in ("README.md", *(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))):
        text = (ROOT / doc).read_text()
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))\)", text):
            assert ((ROOT / doc).parent / target).is_file(), f"{doc} links to {target}, which does not exist"


def test_the_parser_reads_continuation_lines() -> None:
    text = "<!-- layout:start -->\n```\nsrc/nerveseg/\n  data/   a, b,\n          c\n```\n<!-- layout:end -->"
    assert listed_layout(text) == {"data": {"a", "b", "c"}}
    nested = "<!-- layout:start -->\n```\n  tasks/      base, toy/\n  tasks/toy/  blobs\n```\n<!-- layout:end -->"
    assert listed_layout(nested) == {"tasks": {"base", "toy/"}, "tasks/toy": {"blobs"}}
