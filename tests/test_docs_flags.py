"""Every ``--flag`` that README.md, docs/*.md and the Makefile name for a script exists in that script's parser.

A flag belongs to a script when the text ties it to one (``src/X.py``, ``benchmarks/X.py``, ``scripts/X.py``, or
``X.py`` alone when one of those folders holds that file):

- on the script's command line: in a code block or a Makefile recipe (backslash continuations joined, a trailing
  ``# comment`` included) up to a pipe, ``;`` or ``&&``; or in the same inline code span;
- in a table row whose first cell names the script (the flags anywhere in that row; several scripts: any of them);
- in an option list (code lines that start with ``--``, the option column only) under a heading naming the script.

Each script's parser is its ``build_parser()``, or else the parser its ``main`` (or ``parse_args``) builds, caught
as it starts parsing: nothing else of the script runs, so any script added later is covered as it is. A hidden
option (``help=argparse.SUPPRESS``, e.g. a deprecated spelling) does not count: the docs name the current one.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_DIRS = ("src", "benchmarks", "scripts")
DOCS = ("README.md", *sorted(f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")), "Makefile")

MENTION = re.compile(r"(?<![\w/.-])(?:(src|benchmarks|scripts)/)?([A-Za-z_]\w*)\.py\b")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND_END = re.compile(r"\||;|&&")
INLINE_CODE = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Named:
    """A flag the text ties to a script: where, which scripts (the flag must exist in one), which flag."""

    where: str
    scripts: tuple[str, ...]  # paths relative to ROOT, e.g. "src/cv_train.py"
    flag: str


def known_scripts(root: Path = ROOT) -> dict[str, str]:
    """File name -> path of every script in the script folders (a name found in two folders maps to neither)."""
    found: dict[str, list[str]] = {}
    for folder in SCRIPT_DIRS:
        for path in sorted((root / folder).glob("*.py")):
            found.setdefault(path.name, []).append(f"{folder}/{path.name}")
    return {name: paths[0] for name, paths in found.items() if len(paths) == 1}


def mentions(text: str, scripts: dict[str, str]) -> Iterator[tuple[str, int]]:
    """(script path, index just after the mention) of every script named in ``text``."""
    for match in MENTION.finditer(text):
        folder, name = match.group(1), f"{match.group(2)}.py"
        path = f"{folder}/{name}" if folder else scripts.get(name)
        if path is not None and (path in scripts.values() or (ROOT / path).is_file()):
            yield path, match.end()


def command_flags(text: str, scripts: dict[str, str], where: str) -> Iterator[Named]:
    """The flags on each script's command line within ``text`` (a code line or an inline code span)."""
    for path, end in mentions(text, scripts):
        rest = text[end:]
        stop = COMMAND_END.search(rest)
        for flag in FLAG.findall(rest[: stop.start()] if stop else rest):
            yield Named(where, (path,), flag)


def joined_lines(lines: list[str]) -> Iterator[tuple[int, str]]:
    """(first line number, text) with backslash-continued lines joined."""
    start, parts = None, []
    for number, line in enumerate(lines, 1):
        start = start or number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        yield start, " ".join([*parts, line])
        start, parts = None, []
    if parts:
        yield start or len(lines), " ".join(parts)


def named_flags(text: str, doc: str, scripts: dict[str, str] | None = None) -> list[Named]:
    """Every flag ``text`` (a markdown file, or the Makefile when ``doc`` is one) ties to a script."""
    scripts = known_scripts() if scripts is None else scripts
    lines = text.splitlines()
    if Path(doc).name == "Makefile":
        return [found for n, line in joined_lines(lines) for found in command_flags(line, scripts, f"{doc}:{n}")]
    found: list[Named] = []
    in_code, heading_scripts, block = False, (), []
    for number, line in enumerate(lines, 1):
        where = f"{doc}:{number}"
        if line.lstrip().startswith("```"):
            if in_code:
                found += code_block_flags(block, heading_scripts, scripts, doc)
            in_code, block = not in_code, []
            continue
        if in_code:
            block.append((number, line))
            continue
        if line.startswith("#"):
            heading_scripts = tuple(dict.fromkeys(path for path, _ in mentions(line, scripts)))
        for span in INLINE_CODE.findall(line):
            found += command_flags(span, scripts, where)
        if line.lstrip().startswith("|"):
            first_cell = line.strip().strip("|").split("|")[0]
            row_scripts = tuple(dict.fromkeys(path for path, _ in mentions(first_cell, scripts)))
            if row_scripts:
                found += [Named(where, row_scripts, flag) for flag in FLAG.findall(line)]
    return found


def code_block_flags(
    block: list[tuple[int, str]], heading: tuple[str, ...], scripts: dict[str, str], doc: str
) -> list[Named]:
    """A fenced block's command lines, and its option-list lines when the heading above names one script."""
    found = []
    for offset, line in joined_lines([line for _, line in block]):
        where = f"{doc}:{block[offset - 1][0]}"
        found += command_flags(line, scripts, where)
        if len(heading) == 1 and line.lstrip().startswith("--"):
            option_column = re.split(r"\s{2,}", line.strip())[0]
            found += [Named(where, heading, flag) for flag in FLAG.findall(option_column)]
    return found


# ------------------------------------------------------------------------------------------ the parsers


class _Parsing(Exception):
    """Raised in place of parsing, carrying the parser a script's ``main`` built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def load_script(path: str) -> ModuleType:
    """The script's module, imported without running it (``src/`` is on the path; the others load from file)."""
    folder, name = path.split("/")
    if folder == "src":
        return importlib.import_module(Path(name).stem)
    stem = Path(name).stem
    if stem in sys.modules and getattr(sys.modules[stem], "__file__", None) == str(ROOT / path):
        return sys.modules[stem]
    spec = importlib.util.spec_from_file_location(stem, ROOT / path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[stem] = module  # benchmarks import each other by name
    spec.loader.exec_module(module)
    return module


def script_parser(path: str) -> argparse.ArgumentParser:
    """``build_parser()``, or the parser ``parse_args()``/``main()`` builds, caught when it starts parsing."""
    module = load_script(path)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def caught(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Parsing(self)

    entry = getattr(module, "parse_args", None) or getattr(module, "main", None)
    assert entry is not None, f"{path}: give it a build_parser() (or a main() that parses its arguments)"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", caught)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", caught)
        try:
            entry()
        except _Parsing as parsing:
            return parsing.parser
    raise AssertionError(f"{path}: its {entry.__name__}() returned without parsing arguments; give it build_parser()")


def visible_options(parser: argparse.ArgumentParser) -> set[str]:
    """The option strings ``--help`` shows (hidden, deprecated spellings left out)."""
    return {
        option for action in parser._actions if action.help != argparse.SUPPRESS for option in action.option_strings
    }


def unknown_flags(named: list[Named]) -> list[str]:
    """``doc:line: script --flag`` for every flag that none of its scripts' parsers has."""
    options: dict[str, set[str]] = {}
    problems = []
    for item in named:
        for path in item.scripts:
            if path not in options:
                options[path] = visible_options(script_parser(path))
        if not any(item.flag in options[path] for path in item.scripts):
            problems.append(f"{item.where}: {' or '.join(item.scripts)} has no {item.flag}")
    return problems


# ------------------------------------------------------------------------------------------ the tests


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_the_docs_name_exists_in_its_scripts_parser(doc: str) -> None:
    named = named_flags((ROOT / doc).read_text(), doc)
    problems = unknown_flags(named)
    assert not problems, "flags named in the docs that the scripts do not have:\n" + "\n".join(problems)


def test_the_docs_name_flags_of_the_main_commands() -> None:
    """The reader finds what it should: without this, a reader that found nothing would pass every doc."""
    named = [item for doc in DOCS for item in named_flags((ROOT / doc).read_text(), doc)]
    scripts = {path for item in named for path in item.scripts}
    assert {"src/cv_train.py", "src/submit.py", "src/predict.py", "src/tune.py", "src/register.py"} <= scripts
    assert {"benchmarks/cv_honesty.py", "src/make_synthetic.py", "src/prepare_data.py"} <= scripts
    assert len(named) > 100


INVENTED = """
## `python src/cv_train.py`

```
--config experiments/X.yaml   the experiment
--no-such-option N            listed under the heading
```

| command | what | more |
| --- | --- | --- |
| `python src/tune.py --study NAME` | `--made-up-in-a-table` | x |

Run `python src/predict.py INPUT --model URI --made-up-inline` (or `score.py S.csv --per-image --made-up-bare`).

```bash
python src/submit.py --out-dir subs \\
    --made-up-continued  # a comment on it: --made-up-commented
python benchmarks/demo_seeds.py --seeds 1-3 --made-up-benchmark | tee --not-after-a-pipe
```
"""


def test_the_check_fails_on_invented_flags_wherever_the_docs_may_name_them() -> None:
    problems = unknown_flags(named_flags(INVENTED, "invented.md"))
    made_up = {re.search(r"has no (--\S+)", line).group(1) for line in problems}  # type: ignore[union-attr]
    assert made_up == {
        "--no-such-option",
        "--made-up-in-a-table",
        "--made-up-inline",
        "--made-up-bare",
        "--made-up-continued",
        "--made-up-commented",
        "--made-up-benchmark",
    }, problems
    assert any(line.startswith("invented.md:11: src/tune.py has no --made-up-in-a-table") for line in problems)


def test_the_check_reads_the_makefiles_recipes_and_refuses_a_hidden_spelling() -> None:
    makefile = "demo:\n\t$(PY) src/make_synthetic.py --out $(DEMO_RAW) \\\n\t\t--quiet --seed 1\n"
    assert unknown_flags(named_flags(makefile, "Makefile")) == ["Makefile:2: src/make_synthetic.py has no --quiet"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--shown", action="store_true")
    parser.add_argument("--old-spelling", dest="shown", action="store_true", help=argparse.SUPPRESS)
    assert visible_options(parser) == {"-h", "--help", "--shown"}


def test_a_script_without_build_parser_gives_the_parser_its_main_builds() -> None:
    """submit.py builds its parser inside main(): it is caught there, and main does nothing else."""
    assert {"--run-id", "--out-dir", "--no-progress"} <= visible_options(script_parser("src/submit.py"))
    assert "--folds" in visible_options(script_parser("src/cv_train.py"))  # build_parser()
