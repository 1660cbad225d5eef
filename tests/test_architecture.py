"""The package's boundaries: only ``track/`` and ``tune/`` import MLflow, only ``tune/`` imports Optuna.

Read from the source (every import statement, also those inside functions), so a lazy import in the
core is caught too. The core stages (data, model, train, evaluate, submit, tasks) stay usable and
testable without a tracking store or a study.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "nerveseg"
ALLOWED = {"mlflow": {"track", "tune"}, "optuna": {"tune"}, "optuna_integration": {"tune"}}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in the file."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def stage_of(path: Path) -> str:
    """The subpackage a module belongs to ("" for top-level modules such as config.py)."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else ""


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_its_stages() -> None:
    stages = {stage_of(p) for p in MODULES} - {""}
    assert {"data", "model", "train", "evaluate", "inference", "report", "submit", "tasks", "track", "tune"} <= stages


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_tracking_and_tuning_libraries_stay_in_their_stages(path: Path) -> None:
    stage = stage_of(path)
    for library in imported_roots(path) & set(ALLOWED):
        assert stage in ALLOWED[library], (
            f"{path.relative_to(PACKAGE)} imports {library}; move that code to {ALLOWED[library]}"
        )


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    import mlflow.tracking\n    from optuna import trial\n")
    assert imported_roots(module) == {"mlflow", "optuna"}
