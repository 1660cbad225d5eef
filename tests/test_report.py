"""The parent run's Markdown description."""

from __future__ import annotations

import pytest

from nerveseg.train.report import cv_markdown


def table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    rows = [line.strip("|").split("|") for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows if row[0].strip() == first_cell]


def test_full_table() -> None:
    text = cv_markdown(
        {1: 0.645012345, 0: 0.68466379},
        mean=0.664837,
        std=0.0198,
        interval=(0.61, 0.7189),
        oof=0.6650001,
        empty_baseline=0.59,
        postprocessed=0.70123456,
        kept_epochs={0: 12, 1: 9},
        checkpoint_rule="the epoch with the best val_dice",
        title="demo, 2 folds",
        notes=["post-processing chosen on the other folds"],
    )
    assert text.startswith("### demo, 2 folds\n")
    assert table_rows(text, "fold") == [["fold", "score", "kept epoch"]]
    assert table_rows(text, "0") == [["0", "0.6847", "12"]]  # sorted by fold, rounded to 4 decimals
    assert table_rows(text, "1") == [["1", "0.6450", "9"]]
    assert table_rows(text, "mean over folds") == [["mean over folds", "0.6648 ± 0.0198 (std)"]]
    assert table_rows(text, "95 % interval of the mean") == [["95 % interval of the mean", "0.6100 – 0.7189"]]
    assert table_rows(text, "OOF after post-processing") == [["OOF after post-processing", "0.7012"]]
    assert "- checkpoint rule: the epoch with the best val_dice\n" in text
    assert "- post-processing chosen on the other folds\n" in text
    assert "0.68466379" not in text  # full precision only in the metrics
    # every table row has as many cells as its header
    for line in text.splitlines():
        if line.startswith("| fold") or line.startswith("| 0"):
            assert line.count("|") == 4


def test_optional_rows_and_columns_are_left_out() -> None:
    text = cv_markdown({0: 0.5}, mean=0.5)
    assert table_rows(text, "fold") == [["fold", "score"]]
    assert [row[0] for row in table_rows(text, "mean over folds")] == ["mean over folds"]
    for absent in ("interval", "OOF", "all-empty", "post-processing", "checkpoint rule", "kept epoch"):
        assert absent not in text
    with_intervals = cv_markdown({0: 0.5, 1: 0.6}, mean=0.55, fold_intervals={0: (0.4, 0.6)}, kept_epochs={1: 3})
    assert table_rows(with_intervals, "0") == [["0", "0.5000", "0.4000 – 0.6000", "n/a"]]
    assert table_rows(with_intervals, "1") == [["1", "0.6000", "n/a", "3"]]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one fold"):
        cv_markdown({}, mean=0.5)
    with pytest.raises(ValueError, match="low to high"):
        cv_markdown({0: 0.5}, mean=0.5, interval=(0.7, 0.6))
