"""Contradictory near-duplicates, the audit report and the prepare_data command."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import prepare_data
from helpers import fake_data, nerve_mask, read_only_folder, structured_image, write_set, write_tif
from nerveseg.data.audit import DEFAULT_MAX_DISTANCE, audit_report, contradictory_ids, find_contradictory_pairs, prepare
from nerveseg.data.raw import read_image


def near_copy(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """The same frame with fresh speckle-level noise and a 2-pixel shift."""
    noise = np.random.default_rng(seed).normal(0, 3, image.shape)
    return np.clip(np.roll(image, 2, axis=1) + noise, 0, 255).astype(np.uint8)


def test_finds_only_near_identical_pairs_with_conflicting_labels() -> None:
    a, c = structured_image(5), structured_image(6)
    frames = [a, near_copy(a), structured_image(7), c, near_copy(c), a]
    subjects = [1, 1, 1, 1, 1, 2]
    has_mask = [True, False, False, True, True, False]
    # 1_1/1_2: near copies, one empty -> found. 1_1/1_3: conflicting but different frames. 1_4/1_5: near
    # copies that agree. 2_6 is a copy of 1_1 but another subject.
    data = fake_data(subjects, has_mask, full_images=np.stack(frames))
    pairs = find_contradictory_pairs(data)
    assert pairs[["id_a", "id_b", "empty_id"]].values.tolist() == [["1_1", "1_2", "1_2"]]
    assert 0 <= pairs.loc[0, "distance"] < DEFAULT_MAX_DISTANCE
    assert contradictory_ids(data) == {"1_2"}
    assert find_contradictory_pairs(data, max_distance=0.0).empty
    assert len(find_contradictory_pairs(data, max_distance=1.0)) == 6  # every conflicting pair of subject 1
    with pytest.raises(ValueError, match="max_distance"):
        find_contradictory_pairs(data, max_distance=-0.1)


def test_real_frames_calibrate_the_threshold(real_sample: Path) -> None:
    frames = {name: read_image(real_sample / "train" / f"{name}.tif") for name in ("1_1", "1_5", "1_7")}
    images = np.stack([frames["1_1"], near_copy(frames["1_1"]), frames["1_5"], frames["1_7"]])
    data = fake_data([1, 1, 1, 1], [True, False, False, False], full_images=images)
    assert find_contradictory_pairs(data)["id_b"].tolist() == ["1_2"]  # not the distinct frames 1_5 and 1_7


def test_prepare_reports_pairs_and_writes_folds(tmp_path: Path) -> None:
    raw = write_set(tmp_path / "raw", subjects=(1, 2, 3), images=(1, 2, 3))
    frame = structured_image(99)
    write_tif(raw / "train" / "3_4.tif", frame)
    write_tif(raw / "train" / "3_4_mask.tif", nerve_mask(False))
    write_tif(raw / "train" / "3_5.tif", near_copy(frame))
    write_tif(raw / "train" / "3_5_mask.tif", nerve_mask(True))
    kwargs = {"cache_dir": tmp_path / "cache", "folds_dir": tmp_path / "folds", "height": 32, "width": 40}
    result = prepare(raw, n_folds=3, seed=0, progress=False, **kwargs)
    assert result.pairs["empty_id"].tolist() == ["3_5"]
    assert result.folds_path.is_file() and result.folds_path.parent == tmp_path / "folds"
    assert not result.cache.hit and result.test_cache is not None
    report = result.report
    for expected in (
        "images: 11   subjects: 3",
        "model size: 32x40",
        "empty masks: 4 (36.4%)",
        result.data.fingerprint,
    ):
        assert expected in report
    assert "3_4      3_5  distance" in report and str(result.folds_path) in report
    assert "hit, loaded" in prepare(raw, n_folds=3, seed=0, progress=False, **kwargs).report


def test_audit_report_per_subject_table() -> None:
    data = fake_data([1, 1, 1, 1, 12, 12], [True, False, False, False, True, True])  # blank, identical images
    report = audit_report(data, find_contradictory_pairs(data), details={"train cache": "somewhere"})
    assert "   1    4  0.75" in report and "  12    2  0.00" in report
    assert "train cache: somewhere" in report
    assert "contradictory pairs (near-identical, one mask empty): 3" in report
    assert "     1_1      1_4  distance 0.0000  empty 1_4" in report


def test_cli_prints_the_audit_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = write_set(tmp_path / "raw")
    common = ["--cache-dir", str(tmp_path / "cache"), "--folds-dir", str(tmp_path / "folds"), "--no-progress"]
    assert prepare_data.main(["--raw-dir", str(raw), "--height", "32", "--width", "40", "--folds", "2", *common]) == 0
    assert "images: 6   subjects: 2" in capsys.readouterr().out

    (raw / "train" / "2_1_mask.tif").unlink()
    assert prepare_data.main(["--raw-dir", str(raw), *common]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and "2_1.tif" in captured.err
    assert captured.out == ""


def test_prepare_on_the_synthetic_set(synthetic_root: Path, tmp_path: Path) -> None:
    result = prepare(
        synthetic_root / "raw", tmp_path / "cache", tmp_path / "folds", 32, 40, n_folds=3, seed=1, progress=False
    )
    assert len(result.data) == 48 and len(np.unique(result.data.subjects)) == 6
    assert result.test_cache is not None and set(result.folds.tolist()) == {0, 1, 2}


def test_prepare_on_the_real_sample(real_sample: Path, tmp_path: Path) -> None:
    result = prepare(real_sample, tmp_path / "cache", tmp_path / "folds", 64, 80, n_folds=2, seed=0, progress=False)
    empty = set(result.data.ids[~result.data.has_mask])
    assert empty == {"1_5", "1_6", "1_8"}
    assert result.pairs.empty


def test_verify_rebuilds_the_cache_when_content_changed_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same name, size and mtime, other bytes: the cache key cannot see it, --verify can."""

    import tifffile

    raw = write_set(tmp_path / "raw")
    image = raw / "train" / "1_1.tif"
    pixels = read_image(image)
    tifffile.imwrite(image, pixels)  # uncompressed: equal shapes give equal file sizes
    common = ["--raw-dir", str(raw), "--height", "32", "--width", "40", "--folds", "2", "--no-progress"]
    common += ["--cache-dir", str(tmp_path / "cache"), "--folds-dir", str(tmp_path / "folds")]
    assert prepare_data.main(common) == 0
    first = capsys.readouterr().out

    stat = image.stat()
    tifffile.imwrite(image, 255 - pixels)
    assert image.stat().st_size == stat.st_size
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))

    assert prepare_data.main(common) == 0  # trusts name/size/mtime: still a hit with the old content
    assert "hit, loaded" in capsys.readouterr().out
    assert prepare_data.main([*common, "--verify"]) == 0
    verified = capsys.readouterr().out
    assert "raw content changed (verified by hash), rebuilt" in verified
    fingerprint = [line for line in first.splitlines() if "fingerprint" in line]
    assert fingerprint and fingerprint[0] not in verified
    assert prepare_data.main([*common, "--verify"]) == 0
    assert "raw files verified by hash" in capsys.readouterr().out


def test_a_cache_dir_that_is_a_file_is_named_before_any_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_set(tmp_path / "raw")
    file_instead = tmp_path / "a_file"
    file_instead.write_text("x")
    assert prepare_data.main(["--raw-dir", str(raw), "--cache-dir", str(file_instead), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --cache-dir {file_instead} is a file, not a folder; pass a folder path\n"


def test_a_read_only_cache_folder_is_named_before_any_decoding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = write_set(tmp_path / "raw")
    with read_only_folder(tmp_path / "locked") as locked:
        args = ["--raw-dir", str(raw), "--cache-dir", str(locked / "cache"), "--folds-dir", str(tmp_path / "f")]
        assert prepare_data.main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --cache-dir {locked / 'cache'} is not writable") and err.count("\n") == 1
