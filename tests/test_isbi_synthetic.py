"""Synthetic EM: the ISBI PNG layout, determinism by seed, calibration against the real sample's facts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nerveseg.tasks.isbi2012.data import load_isbi
from nerveseg.tasks.isbi2012.synthetic import generate_em, render_stack

# ../shared/isbi2012/README.md: image mean 125.3, std 43.7, membrane share 0.224 (25 real 512x512 slices)
REAL_MEAN, REAL_STD, REAL_MEMBRANE = 125.3, 43.7, 0.224


def test_layout_reads_back_and_is_deterministic(tmp_path: Path) -> None:
    generate_em(tmp_path / "a", n_train=5, n_test=3, size=64, seed=7, progress=False)
    generate_em(tmp_path / "b", n_train=5, n_test=3, size=64, seed=7, progress=False)
    generate_em(tmp_path / "c", n_train=5, n_test=3, size=64, seed=8, progress=False)
    a, b, c = (load_isbi(tmp_path / name) for name in "abc")
    assert a.source == "png" and a.images.shape == (5, 64, 64) and a.test_images.shape == (3, 64, 64)
    assert sorted(p.name for p in (tmp_path / "a" / "test").iterdir()) == ["0.png", "1.png", "2.png"]
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert 0 < a.membranes.mean() < 0.5
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no partial folder left behind"


def test_refuses_non_empty_folder_and_bad_arguments(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty") as error:
        generate_em(tmp_path, n_train=2, n_test=1, size=64, progress=False)
    assert "\n" not in str(error.value) and (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="size must be an integer >= 32"):
        generate_em(tmp_path / "new", n_train=2, n_test=1, size=16, progress=False)


def test_neighbouring_slices_are_more_alike_than_distant_ones() -> None:
    labels = np.stack([label for _, label in render_stack(np.random.SeedSequence(3), 8, 128)]) == 0
    agreement = [np.mean(labels[0] == labels[lag]) for lag in (1, 7)]
    assert agreement[0] > agreement[1] + 0.03


def test_calibrated_against_the_real_sample() -> None:
    """Tolerances cover the generator's slice-to-slice variation (real slice means vary with sd 10)."""
    images, labels = zip(*render_stack(np.random.SeedSequence(0), 4, 512), strict=True)
    images, labels = np.stack(images).astype(np.float64), np.stack(labels)
    assert set(np.unique(labels)) == {0, 255}
    assert abs(images.mean() - REAL_MEAN) < 8
    assert abs(images.std() - REAL_STD) < 3
    assert abs(np.mean(labels == 0) - REAL_MEMBRANE) < 0.02


def test_the_script_answers_a_non_empty_folder_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import make_synthetic_em

    (tmp_path / "keep.txt").write_text("mine")
    assert make_synthetic_em.main(["--out", str(tmp_path), "--train", "2", "--test", "1", "--size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not empty" in err and len(err.splitlines()) == 1
