"""Hostile configs and options (issue 18): non-UTF-8 files, YAML alias bombs, deep nesting, oversized files,
huge values, a bogus Optuna storage URL. Each ends in exit 2 and one ``error:`` line naming the file or option,
before any data is read (the raw folder stays unchanged)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_one_line_error, run_script, tree_digest, write_set

ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]\n" for k in range(8)
)  # nine levels of nine aliases each: 9**9 = 387 million strings if expanded

BAD_CONFIGS = {
    "not UTF-8": ("epochs: 3\nname_of_thing: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "alias bomb": (ALIAS_BOMB.encode(), "anchor"),
    "alias only": (b"epochs: *x\n", "alias"),
    "deep nesting": (b"epochs: " + b"[" * 200 + b"]" * 200 + b"\n", "deeper than"),
    "over the size cap": (b"# " + b"x" * (2 << 20) + b"\nepochs: 3\n", "limit"),
    "huge value": (b"epochs: [" + b"1, " * 100_000 + b"1]\n", "has type list"),
    "not YAML": (b"epochs: [1, 2\n", "not valid YAML"),
}


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    return write_set(tmp_path / "raw", subjects=(1,), images=(1,))


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_hostile_config_file_is_one_short_line(tmp_path: Path, raw: Path, case: str) -> None:
    content, words = BAD_CONFIGS[case]
    config = tmp_path / "hostile.yaml"
    config.write_bytes(content)
    before = tree_digest(raw)
    done = run_script(
        "cv_train.py", "--config", config, "--raw-dir", raw, "--cache-dir", tmp_path / "cache", timeout=60
    )
    line = assert_one_line_error(done, f"config file {config}", words)
    assert len(line) < 400, "the error must never print the whole value"
    assert tree_digest(raw) == before


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_a_hostile_config_file_is_refused_in_process(tmp_path: Path, case: str) -> None:
    """The fast twin of the command test above: ``load_config`` itself."""
    from nerveseg.config import load_config
    from nerveseg.errors import ConfigError

    content, words = BAD_CONFIGS[case]
    config = tmp_path / "hostile.yaml"
    config.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert message.startswith(f"config file {config}") and words in message
    assert "\n" not in message and len(message) < 400


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("case", ["alias bomb", "not UTF-8"])
def test_a_hostile_search_space_is_one_line(tmp_path: Path, raw: Path, case: str) -> None:
    content, words = BAD_CONFIGS[case]
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    done = run_script(
        "tune.py", "--study", "s", "--trials", 1, "--space", space, "--raw-dir", raw,
        "--storage", f"sqlite:///{tmp_path / 'optuna.db'}", timeout=60,
    )  # fmt: skip
    assert_one_line_error(done, f"search space {space}", words)


def test_the_mlflow_settings_file_is_bounded_too(tmp_path: Path) -> None:
    """``mlflow.yml`` is read by the same bounded loader (called directly: the commands read the repo's file)."""
    from nerveseg.track.store import TrackingError, load_mlflow_settings

    settings = tmp_path / "mlflow.yml"
    settings.write_text(ALIAS_BOMB)
    with pytest.raises(TrackingError, match=r"MLflow settings file .* anchor"):
        load_mlflow_settings(settings)


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("url", ["bogus://x", "not a url at all", "sqlite+nodriver:///x.db"])
def test_a_bogus_storage_url_is_one_line(tmp_path: Path, raw: Path, url: str) -> None:
    before = tree_digest(raw)
    done = run_script("tune.py", "--study", "s", "--trials", 1, "--storage", url, "--raw-dir", raw, timeout=60)
    assert_one_line_error(done, "--storage")
    assert tree_digest(raw) == before
