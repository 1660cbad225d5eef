"""The parent run's Markdown description."""

from __future__ import annotations

import re

import pytest

from nerveseg.report.markdown import cv_markdown


def block_rows(markdown: str, first_cell: str) -> list[list[str]]:
    """Rows of the code block's aligned tables (cells are two or more spaces apart) starting with ``first_cell``."""
    block = markdown.split("```text\n", 1)[1].split("```", 1)[0]
    rows = [re.split(r"\s{2,}", line.strip()) for line in block.splitlines() if line.strip()]
    return [row for row in rows if row[0] == first_cell]


def test_full_description() -> None:
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
    assert block_rows(text, "fold") == [["fold", "score", "kept epoch"]]
    assert block_rows(text, "0") == [["0", "0.6847", "12"]]  # sorted by fold, rounded to 4 decimals
    assert block_rows(text, "1") == [["1", "0.6450", "9"]]
    assert block_rows(text, "mean over folds") == [["mean over folds", "0.6648 ± 0.0198 (std)"]]
    assert block_rows(text, "95 % interval of the mean") == [["95 % interval of the mean", "0.6100 – 0.7189"]]
    assert block_rows(text, "OOF after post-processing") == [["OOF after post-processing", "0.7012"]]
    assert "- checkpoint rule: the epoch with the best val_dice\n" in text
    assert "- post-processing chosen on the other folds\n" in text
    assert "0.68466379" not in text  # full precision only in the metrics
    header = next(line for line in text.splitlines() if line.startswith("fold"))
    row = next(line for line in text.splitlines() if line.startswith("0 "))
    assert row.index("0.6847") == header.index("score") and row.index("12") == header.index("kept epoch")


def test_optional_rows_and_columns_are_left_out() -> None:
    text = cv_markdown({0: 0.5}, mean=0.5)
    assert block_rows(text, "fold") == [["fold", "score"]]
    assert block_rows(text, "mean over folds") == [["mean over folds", "0.5000"]]
    for absent in ("interval", "OOF", "all-empty", "post-processing", "checkpoint rule", "kept epoch"):
        assert absent not in text
    with_intervals = cv_markdown({0: 0.5, 1: 0.6}, mean=0.55, fold_intervals={0: (0.4, 0.6)}, kept_epochs={1: 3})
    assert block_rows(with_intervals, "0") == [["0", "0.5000", "0.4000 – 0.6000", "n/a"]]
    assert block_rows(with_intervals, "1") == [["1", "0.6000", "n/a", "3"]]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one fold"):
        cv_markdown({}, mean=0.5)
    with pytest.raises(ValueError, match="low to high"):
        cv_markdown({0: 0.5}, mean=0.5, interval=(0.7, 0.6))
