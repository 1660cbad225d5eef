"""The figures' decisions (axis cut, learning-rate axis, gallery picks, error breakdown, subject order) and
that each figure is written as a real, non-blank PNG."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nerveseg.report import plots
from nerveseg.tasks.nerve import gallery


def assert_real_png(path: Path, min_side: int = 200) -> None:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable PNG"
    assert min(image.shape[:2]) >= min_side
    colours, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    assert counts.max() / counts.sum() < 0.98 and len(colours) > 20, "the figure is (nearly) blank"
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "a temporary file was left behind"


def history(epochs: int = 6, first_val_loss: float = 0.9, lr: list[float] | None = None) -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    loss = list(np.linspace(0.9, 0.3, epochs) + rng.uniform(0, 0.02, epochs))
    val_loss = [first_val_loss, *(np.linspace(0.8, 0.4, epochs - 1))]
    return {
        "loss": loss,
        "val_loss": val_loss,
        "dice": list(np.linspace(0.2, 0.8, epochs)),
        "val_dice": [0.1, 0.5, 0.62, 0.66, 0.64, 0.63][:epochs],
        "learning_rate": lr if lr is not None else [1e-3] * epochs,
    }


def test_loss_axis_is_cut_only_above_a_far_outlier() -> None:
    bulk = [0.9, 0.7, 0.6, 0.55, 0.5, 0.48, 0.47, 0.45]
    top = plots.loss_axis_top([15.8, *bulk])
    assert top is not None and 0.9 < top < 1.5  # the epoch-1 val_loss no longer sets the scale
    assert plots.loss_axis_top(bulk) is None  # an ordinary falling curve keeps its full range
    assert plots.loss_axis_top([15.8, 0.5, 0.4]) is None  # too few values to call anything an outlier
    assert plots.loss_axis_top([15.8, float("nan"), *bulk]) == top  # NaN (a diverged epoch) is ignored


def test_learning_rate_changes() -> None:
    assert not plots.learning_rate_changes([1e-3] * 5)
    assert not plots.learning_rate_changes(None) and not plots.learning_rate_changes([])
    assert plots.learning_rate_changes([1e-3, 1e-3, 5e-4])
    assert plots.learning_rate_changes([1e-8, 2e-8])  # relative, so tiny learning rates count


def test_learning_curves_axes_follow_the_decisions(tmp_path: Path) -> None:
    constant = plots.learning_curves_figure(history(first_val_loss=15.8), kept_epoch=4, title="fold 0")
    assert len(constant.axes) == 2  # no panel and no axis for a flat learning rate
    loss_ax, dice_ax = constant.axes
    assert loss_ax.get_ylim()[1] < 2.0  # cut below the 15.8 outlier...
    title = constant.get_suptitle()
    assert "fold 0" in title and "cut" in title and "15.8" in title  # ...and the title says so
    assert "learning rate 0.001 throughout" in title
    assert loss_ax.get_legend_handles_labels()[1] == ["train_loss", "val_loss"]  # the names the runs log
    assert dice_ax.get_legend_handles_labels()[1][:2] == ["train_dice", "val_dice"]
    assert any("kept epoch 4: val_dice 0.660" in text for text in dice_ax.get_legend_handles_labels()[1])

    schedule = plots.learning_curves_figure(history(lr=[1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4]), kept_epoch=3)
    assert len(schedule.axes) == 3 and schedule.axes[2].get_yscale() == "log"
    assert schedule.axes[0].get_ylim()[1] > 0.85  # nothing to cut: the whole curve shows
    assert "cut" not in schedule.get_suptitle()

    path = plots.plot_learning_curves(history(), tmp_path / "curves.png", best_epoch=4, title="old keyword")
    assert_real_png(path)


def test_progress_figure_has_every_fold(tmp_path: Path) -> None:
    histories = {k: history(first_val_loss=15.8 if k == 1 else 0.9) for k in range(3)}
    figure = plots.progress_figure(histories, {0: 4, 1: 3, 2: 4}, title="demo")
    loss_ax, dice_ax = figure.axes
    assert dice_ax.get_legend_handles_labels()[1] == ["fold 0", "fold 1", "fold 2"]
    assert len(loss_ax.lines) == 6 and loss_ax.get_ylim()[1] < 2.0
    stars = [line for line in dice_ax.lines if line.get_marker() == "*"]
    assert [float(star.get_ydata()[0]) for star in stars] == [0.66, 0.62, 0.66]
    assert_real_png(plots.plot_progress(histories, {0: 4}, tmp_path / "progress.png", "demo"))
    with pytest.raises(ValueError, match="at least one fold"):
        plots.plot_progress({}, {}, tmp_path / "none.png")


def test_error_breakdown_counts_and_shares() -> None:
    truth = np.array([1, 1, 1, 0, 0, 0, 1], dtype=bool)
    pred = np.array([1, 1, 0, 1, 0, 0, 1], dtype=bool)
    dice = np.array([0.8, 0.6, 0.0, 0.0, 1.0, 1.0, 0.0])  # the last: predicted, but in the wrong place
    got = gallery.error_breakdown(truth, pred, dice)
    assert {k: v["count"] for k, v in got.items()} == {
        "true_positive": 3,
        "missed": 1,
        "false_alarm": 1,
        "true_negative": 2,
    }
    total = 0.2 + 0.4 + 1.0 + 1.0 + 1.0
    assert got["true_positive"]["loss_share"] == pytest.approx(1.6 / total)
    assert got["missed"]["loss_share"] == pytest.approx(1 / total) == got["false_alarm"]["loss_share"]
    assert got["true_negative"]["loss_share"] == 0.0
    assert sum(v["loss_share"] for v in got.values()) == pytest.approx(1.0)
    line = gallery.format_breakdown(got)
    assert "missed nerves (FN) 1 (28% of loss)" in line and "false alarms (FP) 1" in line
    perfect = gallery.error_breakdown(truth, truth, np.ones(7))
    assert all(v["loss_share"] == 0.0 for v in perfect.values())
    with pytest.raises(ValueError, match="one shape"):
        gallery.error_breakdown(truth, pred[:3], dice)


def test_pick_best_worst_spreads_over_subjects() -> None:
    ids = ["1_1", "1_2", "1_3", "2_1", "2_2", "3_1", "3_2", "4_1"]
    subjects = [gallery.subject_of(i) for i in ids]
    assert subjects == ["1", "1", "1", "2", "2", "3", "3", "4"]
    scores = np.array([0.95, 0.94, 0.93, 0.90, 0.0, 0.0, 0.8, 0.0])
    nerve = np.array([1, 1, 1, 1, 1, 0, 1, 1], dtype=bool)
    best, worst = gallery.pick_best_worst(scores, nerve, 3, subjects=subjects)
    assert best.tolist() == [0, 3, 6]  # one per subject, not three frames of subject 1
    assert worst.tolist() == [7, 5, 4]  # the 0.0 ties come from subjects 2, 3 and 4, better to worse
    assert len({subjects[i] for i in worst}) == 3
    best, _ = gallery.pick_best_worst(scores, nerve, 5, subjects=subjects)
    # more picks than subjects: every subject once (even 4's 0.0), then a second round; listed best first
    assert best.tolist() == [0, 1, 3, 6, 7]
    plain_best, plain_worst = gallery.pick_best_worst(scores, nerve, 3)
    assert plain_best.tolist() == [0, 1, 2] and plain_worst.tolist() == [7, 5, 4]
    with pytest.raises(ValueError, match="one entry per score"):
        gallery.pick_best_worst(scores, nerve, subjects=subjects[:2])


def test_gallery_png(tmp_path: Path) -> None:
    images = np.random.default_rng(1).integers(0, 255, (2, 42, 58), dtype=np.uint8)
    masks = np.zeros((2, 42, 58), np.uint8)
    masks[:, 10:20, 10:30] = 1
    assert_real_png(gallery.plot_gallery(images, masks, masks[::-1] * 0, ["a", "b"], tmp_path / "g.png"), 150)
    with pytest.raises(ValueError, match="as many truths, predictions and titles as images"):
        gallery.plot_gallery(images, masks, masks, ["a"], tmp_path / "g.png")


def test_subject_scores_worst_first(tmp_path: Path) -> None:
    subjects = ["b", "b", "a", "a", "c", "c", "c"]
    scores = np.array([1.0, 0.0, 0.9, 0.7, 0.2, 0.4, 0.0])
    empty = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    names, mean, empty_mean, counts = gallery.subject_means(subjects, scores, empty)
    assert names.tolist() == ["c", "b", "a"]
    assert mean == pytest.approx([0.2, 0.5, 0.8]) and empty_mean == pytest.approx([2 / 3, 0.5, 0.0])
    assert counts.tolist() == [3, 2, 2]
    tied, *_ = gallery.subject_means(["z", "y"], np.array([0.5, 0.5]), np.array([0.0, 0.0]))
    assert tied.tolist() == ["y", "z"]
    assert_real_png(gallery.plot_subject_scores(subjects, scores, empty, tmp_path / "subjects.png"))
    with pytest.raises(ValueError, match="one entry per image"):
        gallery.subject_means(subjects, scores[:2], empty)
