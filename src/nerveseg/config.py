"""The typed experiment configuration: one base holding every default, YAML files override it.

A config is a frozen dataclass so that it can be hashed, compared and logged as flat MLflow
params whose names never change (``learning_rate``, ``base_filters``...). YAML files under
``experiments/`` name only what differs from the base; the run name is the file's stem.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pkgutil
import sys
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from nerveseg.errors import ConfigError, NervesegError, first_line

Upsampling = Literal["transpose", "bilinear"]
LossName = Literal["dice", "bce", "bce_dice"]
LrSchedule = Literal["constant", "cosine", "plateau"]
# Which weights a fold keeps; only "best_val" looks at the fold it is scored on (an optimistic score).
CheckpointRule = Literal["last", "inner", "best_val"]
CHECKPOINT_RULES: tuple[str, ...] = typing.get_args(CheckpointRule)
ModelFamily = Literal["unet", "patch_cnn"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a cross-validation run, with the reference recipe as defaults."""

    name: str = "default"
    # data
    height: int = 64
    width: int = 80
    drop_contradictory: bool = False  # drop near-duplicate pairs with conflicting labels from training only
    # model
    depth: int = 5  # levels, including the bottleneck: 5 gives 32-64-128-256-512 with base_filters 32
    base_filters: int = 32
    batch_norm: bool = False
    dropout: float = 0.0  # on the two deepest levels
    upsampling: Upsampling = "transpose"
    presence_head: bool = False  # auxiliary "nerve present" output on the bottleneck
    head_before_relu: bool = False  # the mask head reads features before the last ReLU (no silent folds)
    # loss
    loss: LossName = "dice"
    dice_smooth: float = 1.0
    presence_weight: float = 0.2  # weight of the presence head's BCE in the total loss
    # optimisation
    learning_rate: float = 1e-5
    lr_schedule: LrSchedule = "constant"
    warmup_epochs: int = 0  # linear warm-up from 0 to learning_rate ("constant" and "cosine" only)
    use_ema: bool = False  # evaluate and keep the optimizer's exponential moving average of the weights
    ema_momentum: float = 0.99
    batch_size: int = 32
    epochs: int = 20
    # which weights a fold keeps: "last" (fixed schedule, the last epoch), "inner" (early stopping on
    # an inner split of the TRAINING subjects) or "best_val" (best epoch on the scored fold: optimistic)
    checkpoint: CheckpointRule = "last"
    inner_val_fraction: float = 0.2  # share of the training subjects held out when checkpoint="inner"
    patience: int = 5  # epochs without a better inner val_dice before "inner" stops
    # augmentation: 0 is off; 1 means shifts of 10 %, rotations of 10 degrees, zoom of 10 %,
    # brightness and contrast changes of 10 %; the magnitudes scale linearly with it.
    augment_strength: float = 0.0
    augment_flip: bool = False
    # test-time views (the nerve: identity + left-right flip; ISBI: the 8 flips/rotations of a square slice):
    # the out-of-fold predictions use them as the submission does, so post-processing is decided, and the CV
    # estimate cross-fitted, on what ships; submit.py --no-tta then warns that it ships something else
    tta: bool = True
    # performance switches, for GPU users
    mixed_precision: bool = False
    jit_compile: bool = False
    # TensorFlow op determinism: same config, seed, data and machine give identical weights (a little slower)
    deterministic: bool = True
    # task and model family (issue 10): "isbi2012" is the EM membrane task, "patch_cnn" its sliding-window model
    task: str = "nerve"  # one of task_names(): a package under nerveseg/tasks/
    model: ModelFamily = "unet"  # "patch_cnn" needs task "isbi2012"
    crop_size: int = 256  # ISBI U-Net: side of the random training crops; 0 = whole images
    window: int = 65  # patch CNN: odd side of the window whose centre pixel is classified
    patch_filters: int = 48  # patch CNN: feature maps of each of its three conv + pool blocks
    dense_units: int = 200  # patch CNN: units of its dense layer (a convolution)
    steps_per_epoch: int = 0  # ISBI trainings: batches per epoch; 0 = one pass over the data (tasks/isbi2012/trainer)
    # ISBI U-Net (issue 17), all off by default: the U-Net paper's border weight map as per-pixel loss weights
    # (w0 > 0; the paper: w0 10, sigma 5 px), elastic deformation of the crops (displacement std in px on a
    # 3x3 grid; the paper: 10), and the held-out V_rand error after every epoch (one full-slice prediction each)
    border_w0: float = 0.0
    border_sigma: float = 5.0
    elastic_sigma: float = 0.0
    epoch_rand_error: bool = False
    # cross-validation
    folds: int = 5
    seed: int = 42
    # the CV's prediction interval is for the mean score on this many NEW subjects (a held-out set, a
    # leaderboard); 0 = as many as one fold holds. cv_train sets it from --test-masks' subjects.csv.
    predict_subjects: int = 0
    # the nerve task: after the folds, train fold 0 once more (seed + folds) and measure on its held-out images
    # what averaging two models gains; scaled to K members it centres the PI on what the K-fold ensemble that
    # ships will score (each OOF image is one model's prediction). Costs one more fold's training.
    ensemble_gain_probe: bool = False

    def __post_init__(self) -> None:
        _validate(self)

    def to_params(self) -> dict[str, Any]:
        """The flat name -> value mapping logged as MLflow params (stable names)."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied and validated (values may be strings from a CLI)."""
        return TrainConfig(**{**self.to_params(), **_coerce_all(changes)})


_RANGES: dict[str, tuple[float, float]] = {
    "height": (16, 4096),
    "width": (16, 4096),
    "depth": (2, 7),
    "base_filters": (1, 256),
    "dropout": (0.0, 0.9),
    "dice_smooth": (0.0, 1e6),
    "presence_weight": (0.0, 100.0),
    "learning_rate": (1e-8, 1.0),
    "batch_size": (1, 4096),
    "epochs": (1, 10_000),
    "warmup_epochs": (0, 10_000),
    "ema_momentum": (0.0, 0.9999),
    "inner_val_fraction": (0.05, 0.5),
    "patience": (1, 10_000),
    "augment_strength": (0.0, 5.0),
    "crop_size": (0, 4096),
    "window": (3, 201),
    "patch_filters": (1, 1024),
    "dense_units": (1, 16384),
    "steps_per_epoch": (0, 1_000_000),
    "border_w0": (0.0, 100.0),
    "border_sigma": (0.5, 50.0),
    "elastic_sigma": (0.0, 50.0),
    "folds": (2, 100),
    "seed": (0, 2**32 - 1),
    "predict_subjects": (0, 1_000_000),
}


def shown(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error message never prints a whole (maybe huge) value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_option_range(key: str, value: float, option: str) -> None:
    """The config's range for ``key`` applied to a command-line ``option`` (e.g. ``--height``), before any work."""
    low, high = _RANGES[key]
    if not low <= value <= high:
        raise ConfigError(f"{option} {value} is out of range; expected {low} <= {option} <= {high}")


def field_names() -> list[str]:
    """Names a YAML file or a search space may set (everything but ``name``)."""
    return [f.name for f in fields(TrainConfig) if f.name != "name"]


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any) -> Any:
    """Turn YAML/CLI values into the field's type; PyYAML reads ``1e-5`` as a string."""
    expected = _field_types().get(key)
    if expected is None:
        raise ConfigError(f"unknown config key {shown(key)}; expected one of: {', '.join(field_names())}")
    if expected is bool:
        if isinstance(value, str) and value.lower() in {"true", "false"}:
            return value.lower() == "true"
        return value
    if expected in (int, float) and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if expected is int and number.is_integer() else number
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _coerce_all(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if k == "name" else _coerce(k, v)) for k, v in values.items()}


DEFAULT_TASK = TrainConfig.task  # also the task of runs and folders made before the task field was recorded


@functools.cache
def task_names() -> tuple[str, ...]:
    """The tasks there are, the default first: the packages under ``nerveseg/tasks/``, each named as the ``task``
    field names it. Read from the folder, not imported (config sits below the tasks), so a new package is a new
    task with nothing else to register."""
    found = {m.name for m in pkgutil.iter_modules([str(Path(__file__).with_name("tasks"))]) if m.ispkg}
    return (TrainConfig.task, *sorted(found - {TrainConfig.task}))


def _choices(key: str, expected: Any) -> tuple[Any, ...] | None:
    """The values a field may take, where they are a closed list (its ``Literal``; ``task``: the task packages)."""
    if key == "task":
        return task_names()
    return typing.get_args(expected) if typing.get_origin(expected) is Literal else None


def _validate(config: TrainConfig) -> None:
    for key, expected in _field_types().items():
        value = getattr(config, key)
        choices = _choices(key, expected)
        if choices is not None:
            if value not in choices:
                raise ConfigError(f"config {key}={shown(value)} is not allowed; expected one of {list(choices)}")
            continue
        ok = (
            isinstance(value, bool) if expected is bool else isinstance(value, expected) and not isinstance(value, bool)
        )
        if not ok:
            raise ConfigError(
                f"config {key}={shown(value)} has type {type(value).__name__}; expected {expected.__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"config {key}={shown(value)} must be a finite number")
        if key in _RANGES:
            low, high = _RANGES[key]
            if not low <= value <= high:
                raise ConfigError(f"config {key}={value!r} is out of range; expected {low} <= {key} <= {high}")
    if config.height % 2 ** (config.depth - 1) or config.width % 2 ** (config.depth - 1):
        raise ConfigError(
            f"config height={config.height}, width={config.width} must both be divisible by "
            f"2**(depth-1)={2 ** (config.depth - 1)} so that the U-Net's skips line up; "
            "change the size or the depth"
        )
    if config.warmup_epochs >= config.epochs:
        raise ValueError(
            f"config warmup_epochs={config.warmup_epochs} must be smaller than epochs={config.epochs}; "
            "the run would never reach its learning rate"
        )
    if config.warmup_epochs and config.lr_schedule == "plateau":
        raise ValueError(
            "config warmup_epochs > 0 needs lr_schedule 'constant' or 'cosine'; 'plateau' changes the rate "
            "itself, set warmup_epochs: 0 or choose another schedule"
        )
    _validate_task(config)


def _validate_task(config: TrainConfig) -> None:
    """Cross-field rules of the task/model fields (one line each, saying what to change)."""
    if config.model == "patch_cnn" and config.task != "isbi2012":
        raise ValueError(
            f"config model='patch_cnn' needs task='isbi2012' (got task={config.task!r}); set task: isbi2012"
        )
    if config.ensemble_gain_probe and config.task != "nerve":
        raise ValueError(
            f"config ensemble_gain_probe=true is a nerve-task option (got task={config.task!r}); "
            "set ensemble_gain_probe: false"
        )
    if config.task == "isbi2012" and config.presence_head:
        raise ValueError("config presence_head=true is a nerve-task option; set presence_head: false for task isbi2012")
    if config.task == "isbi2012" and config.model == "unet" and config.crop_size:
        factor = 2 ** (config.depth - 1)
        if config.crop_size % factor or config.crop_size > min(config.height, config.width):
            raise ValueError(
                f"config crop_size={config.crop_size} must be divisible by 2**(depth-1)={factor} and at most "
                f"min(height, width)={min(config.height, config.width)}; or set crop_size: 0 for whole images"
            )
    unet_only = {"border_w0": config.border_w0 > 0, "elastic_sigma": config.elastic_sigma > 0}
    for key, on in unet_only.items():
        if on and (config.task, config.model) != ("isbi2012", "unet"):
            raise ValueError(
                f"config {key}={getattr(config, key)} is an option of the ISBI U-Net's crop stream (task isbi2012, "
                f"model unet), got task={config.task!r}, model={config.model!r}; set {key}: 0"
            )
    if config.epoch_rand_error and config.task != "isbi2012":
        raise ValueError("config epoch_rand_error=true is an ISBI option; set it false for the nerve task")
    if config.model == "patch_cnn":
        from nerveseg.model.patch_cnn import PatchCnnSpec  # lazy: keeps TensorFlow out of plain config loading

        PatchCnnSpec(window=config.window, filters=(config.patch_filters,) * 3)  # raises on a window that does not fit


# ------------------------------------------------------------------------------------- bounded YAML
# PyYAML's ``safe_load`` never runs code, but an alias bomb (nested anchors, each repeating the one before)
# expands a few hundred bytes into gigabytes, and deep nesting exhausts the stack. The project's YAML files
# (configs, search spaces, mlflow.yml) are short flat mappings, so a file over ``MAX_YAML_BYTES``, any anchor
# or alias, and nesting deeper than ``MAX_YAML_DEPTH`` are refused before anything is built; so are bytes
# that are not UTF-8. Errors are one line and never print the file's values.

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
    return first_line(err)


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


def load_config(path: Path | str | None = None, **overrides: Any) -> TrainConfig:
    """The base config, updated by the YAML file at ``path`` and then by ``overrides``.

    Unknown keys, wrong types and out-of-range values raise ``ConfigError`` naming the file, or the
    override when only an override is wrong.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; pass an existing experiments/<name>.yaml")
        loaded = load_yaml_file(path, "config file", ConfigError) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of key: value, got {type(loaded).__name__}")
        if "name" in loaded:
            raise ConfigError(f"config file {path} sets 'name'; the run name is the file's stem, remove the key")
        values["name"] = path.stem
        try:
            values.update(_coerce_all(loaded))
        except ValueError as err:
            raise ConfigError(f"config file {path}: {err}") from err
    try:
        config = TrainConfig(**values)
    except ValueError as err:
        where = f"config file {path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from err
    given = _fit_warmup(config, {k: v for k, v in overrides.items() if v is not None})
    if not given:
        return config
    try:  # the file was valid, so what fails now is the override's fault (e.g. --epochs 0)
        return config.replace(**given)
    except ValueError as err:
        values_shown = ", ".join(f"{k}={shown(v)}" for k, v in given.items())
        raise ConfigError(f"override {values_shown} (command line, not the config file): {err}") from err


def _fit_warmup(config: TrainConfig, given: dict[str, Any]) -> dict[str, Any]:
    """``given`` plus ``warmup_epochs = epochs - 1`` when an ``epochs`` override leaves no room for the config's
    warm-up, with a note on stderr: ``--epochs 1`` on a config that warms up is a quick try, not a contradiction
    to refuse. An explicit ``warmup_epochs`` override is left to the usual check."""
    epochs = given.get("epochs")
    if "warmup_epochs" in given or type(epochs) is not int or not 1 <= epochs <= config.warmup_epochs:
        return given
    print(
        f"note: --epochs {epochs} leaves no room for the config's warmup_epochs={config.warmup_epochs}; "
        f"warming up for {epochs - 1} epoch(s) instead",
        file=sys.stderr,
    )
    return {**given, "warmup_epochs": epochs - 1}


def config_to_yaml(config: TrainConfig) -> str:
    """YAML that ``load_config`` accepts as it is (every key but the name, which is the file's stem)."""
    params = config.to_params()
    params.pop("name")
    return yaml.safe_dump(params, sort_keys=False)


def param_strings(config: TrainConfig) -> dict[str, str]:
    """Config params as a tracking store keeps them (strings): what a run is logged with and compared by."""
    return {key: str(value) for key, value in config.to_params().items()}
