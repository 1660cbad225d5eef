"""Reading the user's YAML files (experiment configs, search spaces, ``mlflow.yml``) with bounds.

PyYAML's ``safe_load`` never runs code, but an alias bomb (nested anchors, each repeating the one before)
expands a few hundred bytes into gigabytes, and a deep nesting exhausts the stack. Our files are short flat
mappings, so a file over ``MAX_YAML_BYTES``, any anchor or alias, and nesting deeper than ``MAX_YAML_DEPTH``
are refused before anything is built; non-UTF-8 bytes are refused too. Errors are one line and never print
the file's values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from nerveseg.errors import NervesegError

MAX_YAML_BYTES = 1 << 20  # 1 MiB: the project's YAML files are a few hundred bytes
MAX_YAML_DEPTH = 20  # mappings and lists nested in each other


class _Refused(yaml.MarkedYAMLError):
    """A construct the bounded loader does not take (an anchor, an alias, too deep a nesting)."""


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors, aliases and deep nesting while composing, before values are built."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(problem="uses an alias (*name), which is not allowed", problem_mark=event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused(problem="defines an anchor (&name), which is not allowed", problem_mark=event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise _Refused(problem=f"nests deeper than {MAX_YAML_DEPTH} levels", problem_mark=event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _one_line(err: yaml.YAMLError) -> str:
    """The YAML error's problem and position, without PyYAML's multi-line excerpt of the file."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem:
        mark = err.problem_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return f"{err.problem}{where}"
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_yaml_file(path: Path | str, what: str, error: type[NervesegError] = NervesegError) -> Any:
    """The parsed content of the YAML file ``path``; ``error`` (one line naming ``what`` and the file) when it
    is too large, not UTF-8, not YAML, or uses anchors/aliases or deep nesting. An empty file gives None."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise error(f"{what} {path} is {size} bytes, over the {MAX_YAML_BYTES}-byte limit; is it the right file?")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise error(
            f"{what} {path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); save it as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_BoundedLoader)  # a SafeLoader subclass: no tags run code
    except yaml.YAMLError as err:
        raise error(f"{what} {path} is not valid YAML: {_one_line(err)}; fix the file") from None


__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "load_yaml_file"]
