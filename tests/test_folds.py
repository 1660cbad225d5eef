"""Subject-grouped, presence-stratified folds, and the fold file that is written once and reused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers import fake_data
from nerveseg.data import folds as folds_module
from nerveseg.data.folds import load_or_create_folds, make_folds


@pytest.fixture()
def cohort() -> tuple[np.ndarray, np.ndarray]:
    """30 subjects of 10-20 images whose empty share ranges from 0.1 to 0.9."""
    rng = np.random.default_rng(0)
    subjects, has_mask = [], []
    for subject, empty_share in enumerate(np.linspace(0.1, 0.9, 30), start=1):
        n = int(rng.integers(10, 21))
        subjects += [subject] * n
        has_mask += list(rng.random(n) >= empty_share)
    return np.array(subjects), np.array(has_mask)


def test_folds_partition_subjects_and_keep_the_empty_share(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    subjects, has_mask = cohort
    folds = make_folds(subjects, has_mask, n_folds=5, seed=3)
    assert folds.shape == subjects.shape and set(folds.tolist()) == set(range(5))
    for subject in np.unique(subjects):
        assert len(np.unique(folds[subjects == subject])) == 1, f"subject {subject} is on both sides of a fold"
    overall = 1 - has_mask.mean()
    for fold in range(5):
        assert abs((1 - has_mask[folds == fold].mean()) - overall) < 0.1


def test_same_seed_same_split_other_seed_other_split(cohort: tuple[np.ndarray, np.ndarray]) -> None:
    subjects, has_mask = cohort
    first = make_folds(subjects, has_mask, 5, seed=1)
    np.testing.assert_array_equal(first, make_folds(subjects, has_mask, 5, seed=1))
    assert not np.array_equal(first, make_folds(subjects, has_mask, 5, seed=2))


def test_fewer_subjects_than_folds() -> None:
    with pytest.raises(ValueError, match="only 3 subjects for 5 folds"):
        make_folds(np.array([1, 1, 2, 3]), np.array([True, False, True, False]), 5, 0)


def test_fold_file_is_written_once_and_reused(
    cohort: tuple[np.ndarray, np.ndarray], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fake_data(*cohort)
    folds, path = load_or_create_folds(data, 5, 42, tmp_path)
    assert path == tmp_path / f"folds_{data.fingerprint[:12]}_k5_s42.json"
    saved = json.loads(path.read_text())
    assert (saved["data_fingerprint"], saved["n_folds"], saved["seed"]) == (data.fingerprint, 5, 42)
    assert list(saved["folds"]) == data.ids.tolist()
    assert [saved["folds"][i] for i in data.ids] == folds.tolist()
    np.testing.assert_array_equal(folds, make_folds(data.subjects, data.has_mask, 5, 42))

    written = path.stat().st_mtime_ns
    monkeypatch.setattr(folds_module, "make_folds", lambda *a: pytest.fail("an existing split must be reused"))
    again, same_path = load_or_create_folds(data, 5, 42, tmp_path)
    assert same_path == path and path.stat().st_mtime_ns == written
    np.testing.assert_array_equal(again, folds)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temporary files left behind"


def test_fold_file_that_does_not_match_the_data(cohort: tuple[np.ndarray, np.ndarray], tmp_path: Path) -> None:
    data = fake_data(*cohort)
    _, path = load_or_create_folds(data, 5, 42, tmp_path)
    fewer = fake_data(cohort[0][:-1], cohort[1][:-1], fingerprint=data.fingerprint)
    with pytest.raises(ValueError, match=rf"folds file {path} does not match the data: 0 ids missing.*delete it"):
        load_or_create_folds(fewer, 5, 42, tmp_path)

    path.write_text("{not json")
    with pytest.raises(ValueError, match=rf"folds file {path} cannot be read"):
        load_or_create_folds(data, 5, 42, tmp_path)
