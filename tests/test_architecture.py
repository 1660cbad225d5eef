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


def imported_modules(path: Path) -> set[str]:
    """Every ``nerveseg.*`` module the file imports (absolute imports, also those inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("nerveseg.")}


# (stage, what it must not import, why)
FORBIDDEN = [
    ("track", ("nerveseg.tasks.",), "tasks are reached through nerveseg.tasks.get_task and tasks.base only"),
    ("tune", ("nerveseg.tasks.",), "tasks are reached through nerveseg.tasks.get_task and tasks.base only"),
    ("train", ("nerveseg.submit", "nerveseg.track", "nerveseg.tune"), "training is core: no submission or tracking"),
    ("run", ("nerveseg.track", "nerveseg.tune"), "the run layer talks to stores through the RunStore protocol"),
]


@pytest.mark.parametrize(("stage", "prefixes", "why"), FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_stages_import_only_downwards(stage: str, prefixes: tuple[str, ...], why: str) -> None:
    offenders = []
    for path in (p for p in MODULES if stage_of(p) == stage):
        for module in imported_modules(path):
            if module.startswith(("nerveseg.tasks.base",)) or module == "nerveseg.tasks.get_task":
                continue
            if any(module.startswith(prefix) for prefix in prefixes):
                offenders.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not offenders, f"{why}: {offenders}"


# ---------------------------------------------------------------------------- every name has one home

NAME_HOMES = ("names.py", "track/schema.py")
# values that are also ordinary words of the code (a config field read by name, a dict key of a format owned by
# one module), where a literal is not a second home of a run-schema name
ORDINARY = {"fold", "task", "lr", "oof", "plots", "weights", "folds", "submission", "cv", "status", "kept_epoch",
            "val_score", "checkpoint", "history", "image", "model", "nerveseg"}  # fmt: skip


# (module, value): literals that spell a shared name's value but mean something else there
OTHER_MEANING = {
    ("data/synthetic_em.py", "n_train"): "the generator's argument, named in its error message",
    ("evaluate/postprocess_settings.py", "oof_score"): "a key of postprocessing.json, whose format that module owns",
    ("evaluate/paired.py", "paired_difference"): "the function's own name in the module's __all__",
}


def shared_names() -> dict[str, str]:
    """value -> constant name, for every string constant defined in the name homes."""
    values = {}
    for home in NAME_HOMES:
        tree = ast.parse((PACKAGE / home).read_text())
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and all(isinstance(t, ast.Name) and t.id.isupper() for t in node.targets)
            ):
                values[node.value.value] = node.targets[0].id
    return {value: name for value, name in values.items() if value not in ORDINARY and len(value) > 3}


def string_literals(path: Path) -> list[tuple[int, str]]:
    """(line, value) of every plain string constant, docstrings excluded (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_run_schema_names_live_in_their_home() -> None:
    names = shared_names()
    assert "cv_score_mean" in names and "mlflow.parentRunId" in names  # the scan reads the homes
    offenders = []
    for path in MODULES:
        relative = str(path.relative_to(PACKAGE))
        if relative in NAME_HOMES:
            continue
        offenders += [f"{relative}:{line} {value!r} (use {names[value]})" for line, value in string_literals(path)
                      if value in names and (relative, value) not in OTHER_MEANING]  # fmt: skip
    assert not offenders, "name literals outside nerveseg/names.py and track/schema.py:\n" + "\n".join(offenders)


def test_the_name_scan_sees_a_literal(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""doc mentions cv_score_mean"""\nx = {"cv_score_mean": 1}\n')
    assert string_literals(module) == [(2, "cv_score_mean")]
