"""Submission CSV: Kaggle's conventions, refusal to overwrite, validation that catches every slip, scoring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from nerveseg.evaluate.metrics import competition_score
from nerveseg.submit.rle import rle_encode
from nerveseg.submit.submission_file import masks_to_rows, score_submission, validate_submission, write_submission

PROJ = Path(__file__).resolve().parents[1]


def _masks(n: int = 3) -> np.ndarray:
    masks = np.zeros((n, 420, 580), np.uint8)
    for i in range(n):
        if i % 2 == 0:
            masks[i, 100 + i : 160, 200 : 260 + i] = 1
    return masks


def test_write_sorted_ids_empty_fields_and_header(tmp_path: Path) -> None:
    masks = _masks(3)  # masks[1] is empty
    ids = np.array([10, 2, 1])  # unsorted on purpose
    path = write_submission(ids, masks, tmp_path / "sub.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "img,pixels"
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "10"]  # numeric, not string order
    assert lines[1] == f"1,{rle_encode(masks[2])}"
    assert lines[2] == "2,"  # empty mask is an empty field, as in Kaggle's train_masks.csv
    assert lines[3] == f"10,{rle_encode(masks[0])}"
    validate_submission(path, ids, masks)
    assert not list(tmp_path.glob("*.tmp"))
    # RLE strings are accepted as they are (the streaming path)
    rows = masks_to_rows(ids, [rle_encode(m) for m in masks])
    assert rows == masks_to_rows(ids, masks)


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "sub.csv"
    path.write_text("precious")
    with pytest.raises(ValueError, match="already exists"):
        write_submission([1], _masks(1), path)
    assert path.read_text() == "precious"


def test_rejects_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unique"):
        write_submission([1, 1], _masks(2), tmp_path / "a.csv")
    with pytest.raises(ValueError, match="aligned"):
        write_submission([1, 2, 3], _masks(2), tmp_path / "b.csv")
    with pytest.raises(ValueError, match="full resolution"):
        write_submission([1], np.zeros((1, 64, 80), np.uint8), tmp_path / "c.csv")
    assert not list(tmp_path.iterdir())


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("img,pixels\n1,\n", "lacks 1 test ids"),  # id 2 missing
        ("img,pixels\n1,\n2,\n2,\n", "more than once"),
        ("img,pixels\n1,\n2,\n3,\n", "not test images"),
        ("img,pixels\n2,\n1,\n", "ascending numeric id"),
        ("img,pixels\n1,5 2 1 3\n2,\n", "ascending"),  # descending runs
        ("img,pixels\n1,5 2 6\n2,\n", "pairs"),  # odd count
        ("img,pixels\n1,5 x\n2,\n", "integers"),
        ("img,pixels\n1,243600 2\n2,\n", "beyond"),  # past the last pixel
        ("img,pixels\n1,0 2\n2,\n", ">= 1"),
        ("id,rle\n1,\n2,\n", "header"),
    ],
)
def test_validation_catches(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        validate_submission(_write(tmp_path, text), [1, 2])


def test_validation_compares_with_masks(tmp_path: Path) -> None:
    masks = _masks(2)
    path = write_submission([1, 2], masks, tmp_path / "sub.csv")
    validate_submission(path, [1, 2], masks)
    validate_submission(path, [2, 1], masks[::-1])  # alignment is by id, not row order
    other = masks.copy()
    other[1, 0, 0] = 1
    with pytest.raises(ValueError, match="img 2: the RLE does not decode"):
        validate_submission(path, [1, 2], other)
    with pytest.raises(ValueError, match="img 1"):
        validate_submission(path, [1, 2], [rle_encode(masks[0].T.copy().reshape(420, 580)), rle_encode(masks[1])])


def _write_masks(folder: Path, ids: list[int], masks: np.ndarray) -> None:
    folder.mkdir()
    for image_id, mask in zip(ids, masks, strict=True):
        assert cv2.imwrite(str(folder / f"{image_id}_mask.tif"), mask * 255)


def test_score_submission_and_cli(tmp_path: Path) -> None:
    truth = _masks(4)
    pred = truth.copy()
    pred[0, 100:130] = 0  # partly wrong
    pred[1, 10:20, 10:20] = 1  # false positive on an empty image
    ids = [3, 4, 5, 6]
    _write_masks(tmp_path / "masks", ids, truth)
    csv = write_submission(ids, pred, tmp_path / "sub.csv")
    score, per_image = score_submission(csv, tmp_path / "masks")
    assert score == pytest.approx(competition_score(truth, pred))
    assert per_image["img"].tolist() == ids and per_image.loc[1, "dice"] == 0.0

    out = tmp_path / "per_image.csv"
    result = subprocess.run(
        [sys.executable, "src/score.py", str(csv), "--masks", str(tmp_path / "masks"), "--per-image", str(out)],
        cwd=PROJ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"{score:.6f}" in result.stdout
    assert out.is_file()

    (tmp_path / "masks" / "6_mask.tif").unlink()
    with pytest.raises(ValueError, match=r"no ground truth .* \[6\]"):
        score_submission(csv, tmp_path / "masks")
    result = subprocess.run(
        [sys.executable, "src/score.py", str(csv), "--masks", str(tmp_path / "masks")],
        cwd=PROJ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    with pytest.raises(ValueError, match="does not exist"):
        score_submission(csv, tmp_path / "nowhere")


def test_kaggles_sample_submission_passes_validation(real_sample: Path, tmp_path: Path) -> None:
    """Kaggle's own sample_submission.csv (ids 1..5508, "1 1" everywhere) is what our validator accepts,
    and our file for the same ids has the same header and id column."""
    sample = real_sample / "sample_submission.csv"
    ids = np.arange(1, 5509)
    frame = validate_submission(sample, ids)
    assert frame["pixels"].eq("1 1").all()
    ours = write_submission(ids, ["1 1"] * len(ids), tmp_path / "ours.csv")
    assert ours.read_text().splitlines() == sample.read_text().splitlines()
