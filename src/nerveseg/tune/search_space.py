"""The search space: a YAML file over :class:`~nerveseg.config.TrainConfig` keys, validated before any trial.

A trial's parameters are config overrides, so the best trial becomes an ``experiments/*.yaml`` that
``cv_train.py --config`` runs as it is.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import optuna

from nerveseg.config import TrainConfig, field_names, load_yaml_file
from nerveseg.errors import NervesegError

ParamKind = Literal["float", "int", "categorical"]
_SPEC_KEYS: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class ParamSpec:
    """One dimension of the search: a config key and how Optuna samples it."""

    name: str
    kind: ParamKind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample this parameter from ``trial`` (the Optuna parameter name is the config key)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            step = 1 if self.step is None else int(self.step)
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def extremes(self) -> list[Any]:
        """Values worth checking against a base config: the bounds, or every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class SearchSpace:
    """The parameters a study samples; ``source`` names the YAML file in error messages."""

    params: tuple[ParamSpec, ...]
    source: str = "<search space>"

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every parameter; the result is a ``TrainConfig.replace`` mapping."""
        return {p.name: p.suggest(trial) for p in self.params}

    def check_against(self, base: TrainConfig) -> None:
        """Fail before the first trial if a bound or choice can never make a valid config with ``base``.

        Each value is tried alone on the base config (e.g. ``depth: 6`` with a 32x40 model is
        rejected here rather than failing trials one by one). Combinations of searched keys can
        still be invalid; such trials fail with the config's own message as their reason.
        """
        for spec in self.params:
            for value in spec.extremes():
                try:
                    base.replace(**{spec.name: value})
                except ValueError as err:
                    raise NervesegError(
                        f"search space {self.source}: key {spec.name!r} value {value!r} is not valid with base "
                        f"config {base.name!r}: {err}; narrow the range/choices or change the base config"
                    ) from err


def _as_number(value: Any, *, source: str, key: str, what: str, integer: bool) -> float | int:
    """A YAML scalar as a number; PyYAML reads ``1e-5`` (no dot) as a string, so accept numeric strings."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # a string that is no number stays one, and is refused below
            value = float(value)
    if isinstance(value, bool | str) or value is None:
        raise NervesegError(f"search space {source}: key {key!r}: {what} must be a number, got {value!r}")
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise NervesegError(f"search space {source}: key {key!r}: {what} must be a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise NervesegError(f"search space {source}: key {key!r}: {what} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _field_kind(key: str) -> str:
    """'bool', 'int', 'float', 'str' or 'choice' (a Literal) for a TrainConfig field."""
    import typing

    hint = typing.get_type_hints(TrainConfig)[key]
    if typing.get_origin(hint) is Literal:
        return "choice"
    return {bool: "bool", int: "int", float: "float", str: "str"}.get(hint, "str")


def _check_entry(key: str, spec: Any, source: str) -> str:
    """The entry's ``type`` after checking the key is a config field and the fields fit that type."""
    allowed_keys = field_names()
    if key not in allowed_keys:
        raise NervesegError(
            f"search space {source}: unknown key {key!r}; expected TrainConfig keys: {', '.join(allowed_keys)}"
        )
    if not isinstance(spec, Mapping):
        raise NervesegError(
            f"search space {source}: key {key!r} must map to e.g. {{type: float, low: 1.0e-5, high: 1.0e-3, "
            f"log: true}}, got {spec!r}"
        )
    kind = spec.get("type")
    if kind not in _SPEC_KEYS:
        raise NervesegError(
            f"search space {source}: key {key!r} has type {kind!r}; expected one of {sorted(_SPEC_KEYS)}"
        )
    unknown = set(spec) - _SPEC_KEYS[kind]
    if unknown:
        raise NervesegError(
            f"search space {source}: key {key!r} ({kind}) has unknown fields {sorted(unknown)}; "
            f"allowed: {sorted(_SPEC_KEYS[kind])}"
        )
    return kind


def _categorical(key: str, spec: Mapping[str, Any], source: str) -> ParamSpec:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise NervesegError(f"search space {source}: key {key!r}: choices must be a non-empty list, got {choices!r}")
    for choice in choices:
        if not (choice is None or isinstance(choice, bool | int | float | str)):
            raise NervesegError(
                f"search space {source}: key {key!r}: choice {choice!r} must be a scalar (bool, number, string)"
            )
    if len({(type(c), c) for c in choices}) != len(choices):
        raise NervesegError(f"search space {source}: key {key!r}: choices {choices!r} contain duplicates")
    return ParamSpec(key, "categorical", choices=tuple(choices))


def _numeric(key: str, kind: str, spec: Mapping[str, Any], source: str) -> ParamSpec:
    """An int or float range: low <= high, optional positive step, log scale only with low > 0."""
    field_kind = _field_kind(key)
    if field_kind != kind:
        hint = "use type: categorical with explicit choices" if field_kind in {"bool", "choice", "str"} else ""
        raise NervesegError(
            f"search space {source}: key {key!r} is a {field_kind} config field but the space says type {kind!r}"
            + (f"; {hint}" if hint else f"; use type: {field_kind}")
        )
    for required in ("low", "high"):
        if required not in spec:
            raise NervesegError(f"search space {source}: key {key!r} ({kind}) needs {required!r}")
    integer = kind == "int"
    low = _as_number(spec["low"], source=source, key=key, what="low", integer=integer)
    high = _as_number(spec["high"], source=source, key=key, what="high", integer=integer)
    if low > high:
        raise NervesegError(f"search space {source}: key {key!r}: low {low!r} is greater than high {high!r}")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise NervesegError(f"search space {source}: key {key!r}: log must be true or false, got {log!r}")
    step = spec.get("step")
    if step is not None:
        step = _as_number(step, source=source, key=key, what="step", integer=integer)
        if step <= 0:
            raise NervesegError(f"search space {source}: key {key!r}: step must be positive, got {step!r}")
        if log:
            raise NervesegError(f"search space {source}: key {key!r}: step and log cannot be combined (Optuna)")
    if log and low <= 0:
        raise NervesegError(f"search space {source}: key {key!r}: log scale needs low > 0, got {low!r}")
    return ParamSpec(key, kind, low=low, high=high, step=step, log=log)


def parse_param_spec(key: str, spec: Any, *, source: str) -> ParamSpec:
    """Validate one ``key: {type: ..., ...}`` entry of a search space file."""
    kind = _check_entry(key, spec, source)
    return _categorical(key, spec, source) if kind == "categorical" else _numeric(key, kind, spec, source)


def parse_search_space(mapping: Any, *, source: str = "<search space>") -> SearchSpace:
    """A :class:`SearchSpace` from an already loaded YAML mapping."""
    if not isinstance(mapping, Mapping) or not mapping:
        raise NervesegError(
            f"search space {source} must be a non-empty mapping of TrainConfig key -> spec, "
            f"got {type(mapping).__name__}"
        )
    return SearchSpace(tuple(parse_param_spec(str(k), v, source=source) for k, v in mapping.items()), source=source)


def load_search_space(path: Path | str) -> SearchSpace:
    """Read and validate a search space YAML file (see ``experiments/search_space.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise NervesegError(f"search space file {path} does not exist; pass --space experiments/search_space.yaml")
    loaded = load_yaml_file(path, "search space")
    return parse_search_space(loaded, source=str(path))
