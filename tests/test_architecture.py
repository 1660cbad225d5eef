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


# ---------------------------------------------------------------------------- stores keep the protocols' signatures

# (protocol, implementation) as "module path:class": the run/ use cases are passed these stores as their protocol
IMPLEMENTATIONS = [
    ("run/store.py:RunStore", "run/local_store.py:LocalStore"),
    ("run/store.py:RunStore", "track/mlflow_store.py:MlflowStore"),
    ("run/store.py:RunReader", "run/local_store.py:LocalRunReader"),
    ("run/store.py:RunReader", "track/run_reader.py:MlflowRunReader"),
    ("run/choice.py:RunCatalog", "track/run_reader.py:MlflowRuns"),
    ("run/submit.py:SubmissionLog", "run/submit.py:JsonRecord"),
    ("run/submit.py:TrackedRuns", "track/submission_run.py:MlflowSubmissions"),
    ("run/leaderboard.py:SubmissionRecords", "track/submission_run.py:MlflowSubmissions"),
]


def class_members(spec: str) -> dict[str, list[str] | None]:
    """name -> parameter names (None for a property or an attribute ``__init__`` sets) of the class ``spec``
    (``module path:class``) and of its bases defined in the package, read from the source."""
    path, name = spec.split(":")
    tree = ast.parse((PACKAGE / path).read_text())
    imported = {a.asname or a.name: f"{n.module.removeprefix('nerveseg.').replace('.', '/')}.py"
                for n in tree.body if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("nerveseg.")
                for a in n.names}  # fmt: skip
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name]
    members: dict[str, list[str] | None] = {}
    for base in (b.id for b in cls.bases if isinstance(b, ast.Name) and b.id != "Protocol"):
        members |= class_members(f"{imported.get(base, path)}:{base}")
    for node in cls.body:
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
            decorators = {ast.unparse(d) for d in node.decorator_list}
            arguments = [a.arg for a in node.args.posonlyargs + node.args.args + node.args.kwonlyargs]
            members[node.name] = None if "property" in decorators else arguments[1:]
        elif isinstance(node, ast.FunctionDef) and node.name == "__init__":
            members |= {t.attr: None for t in ast.walk(node) if isinstance(t, ast.Attribute)
                        and isinstance(t.ctx, ast.Store) and ast.unparse(t.value) == "self"}  # fmt: skip
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members[node.target.id] = None  # a dataclass field
    return members


@pytest.mark.parametrize(("protocol", "implementation"), IMPLEMENTATIONS, ids=[f"{i}-{p}" for p, i in IMPLEMENTATIONS])
def test_each_store_has_what_its_protocol_asks_with_the_same_parameters(protocol: str, implementation: str) -> None:
    asked, offered = class_members(protocol), class_members(implementation)
    missing = sorted(set(asked) - set(offered))
    assert not missing, f"{implementation} lacks {missing} of {protocol}"
    differ = [f"{k}{offered[k]} vs {asked[k]}" for k in asked if asked[k] is not None and offered[k] != asked[k]]
    assert not differ, f"{implementation} has other parameters than {protocol}: {differ}"


def test_the_protocol_check_reads_bases_and_attributes() -> None:
    catalog = class_members("track/submission_run.py:MlflowSubmissions")
    assert catalog["experiment"] is None and catalog["reader"] == ["run_id", "unfinished"]  # from MlflowRuns
    assert class_members("run/submit.py:TrackedRuns")["candidates"] == []  # from RunCatalog, in run/choice.py


# ---------------------------------------------------------------------------- every name has one home

NAME_HOMES = ("names.py", "track/schema.py")
# values that are also ordinary words of the code (a config field read by name, a dict key of a format owned by
# one module), where a literal is not a second home of a run-schema name
ORDINARY = {"fold", "task", "lr", "oof", "plots", "weights", "folds", "submission", "cv", "status", "kept_epoch",
            "val_score", "checkpoint", "history", "image", "model", "nerveseg", "name"}  # fmt: skip


# (module, value): literals that spell a shared name's value but mean something else there
OTHER_MEANING = {
    ("tasks/isbi2012/synthetic.py", "n_train"): "the generator's argument, named in its error message",
    ("evaluate/postprocess_settings.py", "oof_score"): "a key of postprocessing.json, whose format that module owns",
    ("evaluate/paired.py", "paired_difference"): "the function's own name in the module's __all__",
    ("run/choice.py", "config"): "a column header of submit.py --list (the config's name)",
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


def home_problems(path: Path) -> tuple[set[str], list[str]]:
    """(the names a home defines at module level, its re-exports: ``import *``, ``from x import NAME`` of
    something not a module, and aliases ``A = B`` that give one name a second spelling)."""
    defined, problems = set(), []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            defined |= {t.id for t in targets if isinstance(t, ast.Name) and t.id != "__all__"}
            if isinstance(node.value, ast.Name | ast.Attribute):
                problems.append(f"line {node.lineno}: an alias of {ast.unparse(node.value)}")
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nerveseg."):
            problems.append(f"line {node.lineno}: from {node.module} import {', '.join(a.name for a in node.names)}")
    return defined, problems


def test_each_shared_name_is_defined_once_and_never_re_exported() -> None:
    defined = {}
    for home in NAME_HOMES:
        defined[home], problems = home_problems(PACKAGE / home)
        assert not problems, f"{home} re-exports or aliases names (import the owner instead): {problems}"
    twice = set.intersection(*defined.values()) - {"annotations"}
    assert not twice, f"defined in both {NAME_HOMES}: {sorted(twice)}"
    assert "CV_SCORE_MEAN" in defined["names.py"] and "PARENT_TAG" in defined["track/schema.py"]


def test_the_home_check_sees_a_star_import_and_an_alias(tmp_path: Path) -> None:
    home = tmp_path / "home.py"
    home.write_text('from nerveseg.names import *\nfrom nerveseg import names\nA = "a"\nB = A\nC = names.D\n')
    defined, problems = home_problems(home)
    assert defined == {"A", "B", "C"}
    assert problems == ["line 1: from nerveseg.names import *", "line 4: an alias of A", "line 5: an alias of names.D"]


def test_the_name_scan_sees_a_literal(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""doc mentions cv_score_mean"""\nx = {"cv_score_mean": 1}\n')
    assert string_literals(module) == [(2, "cv_score_mean")]


# ---------------------------------------------------------------------------- one declared layer order

# nerveseg's packages from the bottom up: a module imports its own package and lower tiers only, and no two
# packages import each other (directly or round a longer loop). The top-level modules are the core, each its
# own package in the lowest tier. evaluate (metrics and post-processing of arrays, nothing else of nerveseg)
# sits below data because the synthetic nerve generator keeps a mask's largest component with it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("names", "errors", "paths", "io_utils", "logs", "eta", "uris", "config", "cli", "kaggle_client", "provenance"),
    ("evaluate",),
    ("data",),
    ("model",),
    ("submit",),  # the submission files' formats shared by tasks and serving (RLE, the CSV)
    ("inference",),
    ("train",),  # a fold's out-of-fold predictions go through inference's ensemble
    ("report",),
    ("tasks",),
    ("run",),
    ("track",),
    ("tune",),
)

# (importing module, imported module) -> why this import against the order is kept; keep the list short
LAYER_EXCEPTIONS = {
    ("nerveseg.config", "nerveseg.model.patch_cnn"): "config rejects a patch_cnn window at load time with the model's "
    "own window arithmetic (a lazy import); copying that arithmetic below config would give it two homes",
}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """The dotted name of a module file under the package folder ``root`` (a package's ``__init__``: its own)."""
    parts = (root.name, *path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module (or module attribute) of the package the file imports: absolute and relative imports,
    also those inside functions (``from x import a`` gives ``x`` and ``x.a``: ``a`` may be a module)."""
    name, top = module_name(path, root), root.name
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([node.module] if node.module else [])])
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {module for module in found if module.startswith(f"{top}.")}


def layer_violations(
    imports: dict[str, set[str]], layers: tuple[tuple[str, ...], ...], exceptions: dict[tuple[str, str], str]
) -> list[str]:
    """Imports that go up ``layers`` or into a package not in them, and every cycle between packages, as lines.

    ``imports`` maps a dotted module name to the dotted names it imports; a module's package is the name's
    second part (``nerveseg.train.fold`` -> ``train``, ``nerveseg.config`` -> ``config``).
    """
    tier = {package: level for level, packages in enumerate(layers) for package in packages}
    edges: dict[str, dict[str, str]] = {}  # package -> imported package -> one example import
    problems = []
    for module, targets in sorted(imports.items()):
        for target in sorted(targets):
            source, destination = module.split(".")[1], target.split(".")[1]
            covered = any(target == b or target.startswith(f"{b}.") for a, b in exceptions if a == module)
            if source == destination or covered:
                continue
            edges.setdefault(source, {}).setdefault(destination, f"{module} imports {target}")
            if source not in tier or destination not in tier:
                problems.append(f"not in the declared order: {module} imports {target}")
            elif tier[source] < tier[destination]:
                problems.append(f"upward: {module} imports {target} ({source} is below {destination})")
    return problems + [f"cycle: {cycle}" for cycle in package_cycles(edges)]


def package_cycles(edges: dict[str, dict[str, str]]) -> list[str]:
    """One line per strongly connected group of packages (Tarjan's algorithm), naming an import of each edge."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [
        " <-> ".join(group)
        + ": "
        + "; ".join(edges[a][b] for a in group for b in sorted(edges.get(a, {})) if b in group)
        for group in groups
    ]


def test_every_import_follows_the_layer_order() -> None:
    imports = {module_name(path): package_imports(path) for path in MODULES}
    assert {module.split(".")[1] for module in imports if "." in module} <= {p for t in LAYERS for p in t}
    for importer, imported in LAYER_EXCEPTIONS:  # a stale exception is removed, not kept
        assert any(t == imported or t.startswith(f"{imported}.") for t in imports[importer]), (importer, imported)
    problems = layer_violations(imports, LAYERS, LAYER_EXCEPTIONS)
    assert not problems, "imports against the layer order (tests/test_architecture.py LAYERS):\n" + "\n".join(problems)


def test_the_layer_check_sees_an_upward_import_and_a_cycle(tmp_path: Path) -> None:
    """Synthetic modules: relative and lazy imports are read, an upward import and a same-tier cycle reported."""
    root = tmp_path / "pkg"
    files = {
        "data/__init__.py": "",
        "data/reader.py": "from .. import names\n\ndef f():\n    from ..model.net import build\n",
        "model/__init__.py": "",
        "model/net.py": "from pkg.data.reader import f\n",
        "report/a.py": "import pkg.submit.b\n",
        "submit/b.py": "from ..report import a\n",
        "names.py": "",
    }
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    imports = {module_name(p, root): package_imports(p, root) for p in sorted(root.rglob("*.py"))}
    assert imports["pkg.data.reader"] == {"pkg.names", "pkg.model.net", "pkg.model.net.build"}
    assert imports["pkg.submit.b"] == {"pkg.report", "pkg.report.a"}
    layers = (("names",), ("data",), ("model",), ("report", "submit"))
    problems = layer_violations(imports, layers, {})
    assert problems == [
        "upward: pkg.data.reader imports pkg.model.net (data is below model)",
        "upward: pkg.data.reader imports pkg.model.net.build (data is below model)",
        "cycle: data <-> model: pkg.data.reader imports pkg.model.net; pkg.model.net imports pkg.data.reader",
        "cycle: report <-> submit: pkg.report.a imports pkg.submit.b; pkg.submit.b imports pkg.report",
    ]
    exception = {("pkg.data.reader", "pkg.model.net"): "a documented reason"}
    assert [p for p in layer_violations(imports, layers, exception) if "data" in p] == []


def model_family_tests(path: Path) -> list[int]:
    """Lines comparing a ``.model`` attribute with a string (``config.model == "patch_cnn"`` and the like)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(isinstance(o, ast.Attribute) and o.attr == "model" for o in operands) and any(
                isinstance(o, ast.Constant) and isinstance(o.value, str) for o in operands
            ):
                lines.append(node.lineno)
    return lines


def test_model_families_are_asked_not_tested() -> None:
    """Code asks ``model.families.family_of(config)``; only config validation compares ``config.model``."""
    allowed = {"config.py", "model/families.py"}
    offenders = [f"{path.relative_to(PACKAGE)}:{line}" for path in MODULES
                 if str(path.relative_to(PACKAGE)) not in allowed for line in model_family_tests(path)]  # fmt: skip
    assert not offenders, f"use model.families.family_of(config) instead of testing config.model: {offenders}"
    assert model_family_tests(PACKAGE / "config.py")  # the scan sees the comparisons it allows there


# ---------------------------------------------------------------------------- task names stay home

TASK_NAMES = ("nerve", "isbi2012", "toy")
FAMILY_NAMES = ("patch_cnn",)
NAME_HOMES_EVERYWHERE = {"config.py", "model/families.py"}  # the config's validation, the families' registry
# (module, literal) -> why a literal may stay outside its home: none since the patch CNN's Keras name comes from
# model.families (issue 31); a new literal outside its home fails, and an entry whose literal is gone must be removed
TASK_NAME_OFFENDERS: dict[tuple[str, str], str] = {}


def task_name_literals(path: Path) -> set[str]:
    """The task and family names a module spells as plain string literals (docstrings excluded)."""
    return {value for _, value in string_literals(path) if value in TASK_NAMES + FAMILY_NAMES}


def at_home(relative: str, name: str) -> bool:
    """A task's name in its own package (``tasks/<name>/``), or any name in the config's validation and families."""
    return relative in NAME_HOMES_EVERYWHERE or relative.startswith(f"tasks/{name}/")


def test_task_and_family_names_are_spelled_only_at_home() -> None:
    scripts = sorted(PACKAGE.parent.glob("*.py"))  # the commands in src/ ask the task too (``../submit.py``)
    found = {(str(p.relative_to(PACKAGE)), name) for p in MODULES for name in task_name_literals(p)}
    found |= {(f"../{p.name}", name) for p in scripts for name in task_name_literals(p)}
    assert ("tasks/toy/__init__.py", "toy") in found and ("config.py", "isbi2012") in found  # the scan reads them
    outside = {(module, name) for module, name in found if not at_home(module, name)}
    assert not outside - TASK_NAME_OFFENDERS.keys(), (
        f"task or family names tested outside their homes (ask the task or model.families instead): "
        f"{sorted(outside - TASK_NAME_OFFENDERS.keys())}"
    )
    assert not TASK_NAME_OFFENDERS.keys() - outside, (
        f"gone from the code, remove from TASK_NAME_OFFENDERS: {sorted(TASK_NAME_OFFENDERS.keys() - outside)}"
    )


def test_the_task_name_scan_sees_a_literal_but_not_a_docstring(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('"""the nerve task"""\nif task == "isbi2012":\n    model = f"{x}_patch_cnn"\n')
    assert task_name_literals(module) == {"isbi2012"}
    assert at_home("tasks/toy/blobs.py", "toy") and not at_home("tasks/toy/blobs.py", "nerve")


def fit_calls(path: Path) -> list[int]:
    """Lines calling a ``.fit(...)`` method (``model.fit`` and the like)."""
    calls = (node for node in ast.walk(ast.parse(path.read_text(), filename=str(path))) if isinstance(node, ast.Call))
    return [call.lineno for call in calls if isinstance(call.func, ast.Attribute) and call.func.attr == "fit"]


def test_one_fold_trainer_fits_every_task_and_family() -> None:
    """A change to training is made once: the package's only ``fit`` is ``train.fold.fit_fold``'s."""
    calls = [f"{path.relative_to(PACKAGE)}:{line}" for path in MODULES for line in fit_calls(path)]
    assert len(calls) == 1 and calls[0].startswith("train/fold.py:"), f"one model.fit, in train/fold.py: {calls}"


# ------------------------------------------------------------------------- the house, drawn from the code


PACKAGES = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
TASK_PACKAGES = {p.parent.name for p in (PACKAGE / "tasks").glob("*/__init__.py")}


def house_room(module: str) -> str:
    """Where a module (or a name imported from one) lives in the house: its package (``run/``), a task's own
    package (``tasks/nerve/``), or ``(top level)`` for the core modules."""
    parts = module.split(".")[1:]
    if not parts or parts[0] not in PACKAGES:
        return "(top level)"
    if parts[0] == "tasks" and len(parts) > 1 and parts[1] in TASK_PACKAGES:
        return f"tasks/{parts[1]}/"
    return f"{parts[0]}/"


def draw_house(imports: dict[str, set[str]], libraries: dict[str, set[str]]) -> str:
    """One line per room, the top layer first: the rooms it imports (those below it), and MLflow or Optuna where
    it imports them. ``imports``: module -> the package's modules it imports; ``libraries``: module -> its imports'
    top-level names."""
    tier = {package: level for level, packages in enumerate(LAYERS) for package in packages}
    tier |= {"(top level)": -1}

    def rank(room: str) -> tuple[int, str]:
        return -tier.get(room.split("/")[0], -1), room

    below: dict[str, set[str]] = {}
    for module, targets in imports.items():
        room = house_room(module)
        below.setdefault(room, set()).update(house_room(t) for t in targets if house_room(t) != room)
        marks = {"MLflow" for _ in libraries[module] & {"mlflow"}} | {"Optuna" for _ in libraries[module] & {"optuna"}}
        below[room].update(f"[{mark}]" for mark in marks)
    lines = []
    for room in sorted(below, key=rank):
        rooms = sorted((r for r in below[room] if not r.startswith("[")), key=rank)
        marks = sorted(r for r in below[room] if r.startswith("["))
        lines.append(f"{room:<16} {' '.join([*marks, *rooms])}".rstrip())
    return "\n".join(lines)


def test_the_readme_draws_the_house_as_the_code_builds_it() -> None:
    """The README's drawing of the packages and what each imports is the code's (paste the printed block)."""
    imports = {module_name(path): package_imports(path) for path in MODULES}
    drawn = draw_house(imports, {module_name(path): imported_roots(path) for path in MODULES})
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    block = readme.split("<!-- house:start -->\n```\n")[1].split("```\n<!-- house:end -->")[0]
    assert block.strip() == drawn, f"README's house is out of date; the code draws:\n{drawn}"


def test_a_house_room_is_a_package_or_a_task_package() -> None:
    rooms = [house_room(m) for m in ("nerveseg.run.submit", "nerveseg.tasks.base.Task", "nerveseg.tasks.nerve.fold",
                                     "nerveseg.tasks.get_task", "nerveseg.config", "nerveseg")]  # fmt: skip
    assert rooms == ["run/", "tasks/", "tasks/nerve/", "tasks/", "(top level)", "(top level)"]
