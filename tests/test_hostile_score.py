"""Hostile input to ``src/score.py`` (issue 18): run as a user would, each case ends in exit 2 and one
``error:`` line naming the file or option, nothing is overwritten and the raw folder is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_one_line_error, nerve_mask, run_script, tree_digest, write_set, write_tif


@pytest.fixture()
def scoring(tmp_path: Path) -> dict[str, Path]:
    """A tiny raw folder, two ground-truth masks and a valid submission for them."""
    raw = write_set(tmp_path / "raw", subjects=(1,), images=(1,))
    masks = tmp_path / "masks"
    write_tif(masks / "1_mask.tif", nerve_mask(False))
    write_tif(masks / "2_mask.tif", nerve_mask(True))
    csv = tmp_path / "sub.csv"
    csv.write_text("img,pixels\n1,1 10\n2,\n")
    return {"raw": raw, "masks": masks, "csv": csv, "root": tmp_path}


def score(scoring: dict[str, Path], csv: Path, *extra: object):
    return run_script("score.py", csv, "--masks", scoring["masks"], "--raw-dir", scoring["raw"], *extra)


@pytest.mark.slow  # runs the command in a subprocess
def test_a_valid_submission_still_scores(scoring: dict[str, Path]) -> None:
    out = scoring["root"] / "per_image.csv"
    done = score(scoring, scoring["csv"], "--per-image", out)
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("img,dice")


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("target", ["the submission itself", "another file", "a raw TIFF", "a mask"])
def test_per_image_never_replaces_an_existing_file(scoring: dict[str, Path], target: str) -> None:
    other = scoring["root"] / "notes.csv"
    other.write_text("mine\n")
    path = {
        "the submission itself": scoring["csv"],
        "another file": other,
        "a raw TIFF": scoring["raw"] / "train" / "1_1.tif",
        "a mask": scoring["masks"] / "1_mask.tif",
    }[target]
    before, raw_before = path.read_bytes(), tree_digest(scoring["raw"])
    done = score(scoring, scoring["csv"], "--per-image", path)
    assert_one_line_error(done, "--per-image", str(path), "already exists")
    assert path.read_bytes() == before
    assert tree_digest(scoring["raw"]) == raw_before


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("where", ["raw", "masks"])
def test_per_image_never_writes_a_new_file_into_the_raw_or_ground_truth_folder(
    scoring: dict[str, Path], where: str
) -> None:
    path = scoring[where] / "train" / "scores.csv" if where == "raw" else scoring[where] / "scores.csv"
    raw_before, masks_before = tree_digest(scoring["raw"]), tree_digest(scoring["masks"])
    done = score(scoring, scoring["csv"], "--per-image", path)
    assert_one_line_error(done, "--per-image", str(path), "never written")
    assert not path.exists()
    assert (tree_digest(scoring["raw"]), tree_digest(scoring["masks"])) == (raw_before, masks_before)


BAD_CSVS = {
    "empty file": (b"", "is empty"),
    "binary file": (bytes(range(256)) * 4, "binary file"),
    "not UTF-8": ("img,pixels\n1,é\n".encode("latin-1"), "not UTF-8"),
    "huge id": (b"img,pixels\n99999999999999999999,\n", "positive integers"),
    "unclosed quote": (b'img,pixels\n1,"1 10\n', "not a well-formed CSV"),
}


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("case", BAD_CSVS)
def test_a_broken_submission_csv_is_one_line(scoring: dict[str, Path], case: str) -> None:
    content, words = BAD_CSVS[case]
    csv = scoring["root"] / "bad.csv"
    csv.write_bytes(content)
    raw_before = tree_digest(scoring["raw"])
    done = score(scoring, csv)
    assert_one_line_error(done, str(csv), words)
    assert tree_digest(scoring["raw"]) == raw_before
