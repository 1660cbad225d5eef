"""The typed config: defaults are the reference recipe, YAML overrides, unknown keys rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerveseg.config import TrainConfig, config_to_yaml, field_names, load_config
from nerveseg.paths import EXPERIMENTS_DIR


def test_defaults_are_the_reference_recipe() -> None:
    config = load_config()
    assert (config.depth, config.base_filters, config.height, config.width) == (5, 32, 64, 80)
    assert (config.learning_rate, config.loss, config.batch_size, config.epochs) == (1e-5, "dice", 32, 20)


def test_yaml_overrides_and_name_is_stem(tmp_path: Path) -> None:
    path = tmp_path / "my_exp.yaml"
    path.write_text("learning_rate: 1e-3\nbatch_norm: true\nepochs: 3\n")
    config = load_config(path, seed=7)
    assert config.name == "my_exp"
    assert config.learning_rate == pytest.approx(1e-3)  # PyYAML reads 1e-3 as a string
    assert config.batch_norm is True
    assert (config.epochs, config.seed) == (3, 7)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rat: 0.1\n", "unknown config key 'learning_rat'"),
        ("loss: focal\n", "expected one of"),
        ("epochs: 0\n", "out of range"),
        ("batch_size: 3.5\n", "expected int"),
        ("name: other\n", "file's stem"),
        ("- a\n- b\n", "mapping"),
        ("height: 60\n", "divisible"),
    ],
)
def test_bad_yaml_names_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_exported_yaml_loads_back_identically(tmp_path: Path) -> None:
    config = TrainConfig(name="x", learning_rate=3e-4, presence_head=True, loss="bce_dice", dropout=0.25)
    path = tmp_path / "x.yaml"
    path.write_text(config_to_yaml(config))
    assert load_config(path) == config


def test_shipped_experiment_files_load() -> None:
    files = sorted(EXPERIMENTS_DIR.glob("*.yaml"))
    for path in files:
        if path.name == "search_space.yaml" or path.stem.endswith("_space"):
            continue
        config = load_config(path)
        assert set(config.to_params()) == {"name", *field_names()}
