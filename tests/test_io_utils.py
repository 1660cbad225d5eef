"""Atomic writes: nothing half-written, no temporary files left, ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from nerveseg.io_utils import atomic_save_npz, atomic_write_text


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    atomic_write_text(path, "hello")
    assert path.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left behind


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "arrays.npz"
    atomic_save_npz(path, a=np.arange(3))
    with pytest.raises(TypeError):
        atomic_save_npz(path, a=object.__new__(type("NotAnArray", (), {"__array__": None})))
    np.testing.assert_array_equal(np.load(path)["a"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


def test_create_refuses_an_existing_file(tmp_path: Path) -> None:
    from nerveseg.io_utils import atomic_create_text

    path = tmp_path / "sub.csv"
    atomic_create_text(path, "first")
    with pytest.raises(FileExistsError) as caught:
        atomic_create_text(path, "second")
    assert caught.value.filename == str(path)  # the target, not the temporary file the kernel names (issue 25)
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]
