"""scripts/pick_python.sh, which `make venv` asks for its interpreter: newest supported first, one-line refusals.

Fake interpreters (shell scripts that answer the two questions the script asks) stand in for real Pythons, so the
tests do not depend on which versions this machine has.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "pick_python.sh"
NEEDS = "Python 3.11, 3.12 or 3.13"


def fake_python(path: Path, version: str | None) -> Path:
    """A stand-in that reports ``version`` (or fails like a pyenv shim of an inactive version when None)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version is None:
        body = f'echo "pyenv: {path.name}: command not found" >&2; exit 127'
    else:
        body = f'case "$2" in *executable*) echo "$0" ;; *) echo {version} ;; esac'
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def pick(bin_dir: Path, python_boot: str | None = None, **env_vars: str) -> subprocess.CompletedProcess[str]:
    """Run the script with only ``bin_dir`` and the system's basic tools on PATH."""
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(bin_dir), **env_vars}
    if python_boot is not None:
        env["PYTHON_BOOT"] = python_boot
    return subprocess.run(["/bin/bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """A PATH folder whose python3.X and pyenv names shadow any real ones; all fail until a test says otherwise."""
    for minor in (11, 12, 13):
        fake_python(tmp_path / "bin" / f"python3.{minor}", None)
    fake_pyenv(tmp_path / "bin", None)
    return tmp_path / "bin"


def fake_pyenv(bin_dir: Path, root: Path | None) -> None:
    """A stand-in for pyenv whose `pyenv root` is ``root`` (a pyenv that knows no root when None)."""
    body = "exit 1" if root is None else f'[ "$1" = root ] && echo {root}'
    (bin_dir / "pyenv").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "pyenv").chmod(0o755)


def test_the_newest_supported_python_that_runs_wins(bin_dir: Path) -> None:
    fake_python(bin_dir / "python3.11", "3.11")
    twelve = fake_python(bin_dir / "python3.12", "3.12")
    result = pick(bin_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(twelve)
    newest = fake_python(bin_dir / "python3.13", "3.13")
    assert pick(bin_dir).stdout.strip() == str(newest)


def test_no_supported_python_is_one_line_naming_the_versions(bin_dir: Path) -> None:
    fake_python(bin_dir / "python3.13", "3.10")  # a name that lies is not trusted
    result = pick(bin_dir)
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert NEEDS in result.stderr and "PYTHON_BOOT" in result.stderr


def test_python_boot_overrides_and_is_checked(bin_dir: Path) -> None:
    fake_python(bin_dir / "python3.13", "3.13")
    old = fake_python(bin_dir / "old" / "python", "3.10")
    result = pick(bin_dir, python_boot=str(old))
    assert result.returncode == 1
    assert result.stderr.strip() == f"PYTHON_BOOT={old} is Python 3.10; nerveseg needs {NEEDS}: " + (
        "set PYTHON_BOOT=/path/to/python3.13"
    )
    missing = pick(bin_dir, python_boot=str(bin_dir / "nope"))
    assert missing.returncode == 1
    assert "does not run" in missing.stderr and len(missing.stderr.splitlines()) == 1
    eleven = fake_python(bin_dir / "python3.11", "3.11")
    assert pick(bin_dir, python_boot="python3.11").stdout.strip() == str(eleven)


def test_an_inactive_pyenv_version_is_found_behind_its_shim(bin_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "pyenv"
    fake_pyenv(bin_dir, root)
    fake_python(root / "versions" / "3.12.1" / "bin" / "python3.12", "3.12")
    newer_patch = fake_python(root / "versions" / "3.12.10" / "bin" / "python3.12", "3.12")
    fake_python(bin_dir / "python3.11", "3.11")
    assert pick(bin_dir).stdout.strip() == str(newer_patch)  # 3.12 via pyenv beats the active 3.11
    assert pick(bin_dir, python_boot="python3.12").stdout.strip() == str(newer_patch)
    (bin_dir / "pyenv").unlink()  # only the shims on PATH: PYENV_ROOT says where the versions are
    assert pick(bin_dir, PYENV_ROOT=str(root)).stdout.strip() == str(newer_patch)


def test_the_running_interpreter_is_accepted() -> None:
    """The interpreter running these tests is one the venv could be built from (it is in the supported range)."""
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        env={**os.environ, "PYTHON_BOOT": sys.executable},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).exists()


def test_make_venv_refuses_before_creating_anything(bin_dir: Path, tmp_path: Path) -> None:
    old = fake_python(bin_dir / "old" / "python", "3.10")
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "-s", "-C", str(REPO), "venv", f"VENV={venv}", f"PYTHON_BOOT={old}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert f"is Python 3.10; nerveseg needs {NEEDS}" in result.stderr
    assert not venv.exists()


def test_ruff_targets_the_lowest_supported_version() -> None:
    """ruff must not accept syntax newer than the oldest Python in requires-python (the range the script reads)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    lowest = re.fullmatch(r">=3\.(\d+),<3\.\d+", project["project"]["requires-python"])
    assert lowest is not None, "keep requires-python in the form >=3.X,<3.Y (scripts/pick_python.sh reads it)"
    assert project["tool"]["ruff"]["target-version"] == f"py3{lowest.group(1)}"
