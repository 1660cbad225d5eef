"""submit.py --test-masks says whether the test score fell inside the CV run's prediction interval."""

from __future__ import annotations

from nerveseg import names
from nerveseg.evaluate.uncertainty import Interval
from nerveseg.run.choice import cv_prediction_interval
from nerveseg.run.submit import prediction_check


def logged(low: float = 0.6, high: float = 0.8, m: float = 8.0) -> dict[str, float]:
    return {
        names.OOF_SCORE_POSTPROCESSED: 0.7,
        names.OOF_SCORE_POSTPROCESSED_PI_LOW: low,
        names.OOF_SCORE_POSTPROCESSED_PI_HIGH: high,
        names.PI_SUBJECTS: m,
    }


def test_the_logged_interval_is_read_back_and_runs_without_one_give_none() -> None:
    prediction = cv_prediction_interval(logged())
    assert prediction is not None
    assert (prediction.estimate, prediction.low, prediction.high, prediction.new_groups) == (0.7, 0.6, 0.8, 8)
    older = logged()
    del older[names.PI_SUBJECTS]
    assert cv_prediction_interval(older) is None


def test_the_check_says_inside_or_outside_and_warns_about_another_test_size() -> None:
    prediction = cv_prediction_interval(logged())
    assert prediction is not None
    eight = Interval(0.7, 0.65, 0.75, 8, "subject")
    inside = prediction_check(0.71, eight, prediction)
    assert "is inside it" in inside and "95 % PI 0.6000-0.8000" in inside and "8 new subjects" in inside
    assert "test set has" not in inside
    assert "is OUTSIDE it" in prediction_check(0.59, eight, prediction)
    ten = Interval(0.7, 0.65, 0.75, 10, "subject")
    assert "--predict-subjects 10" in prediction_check(0.7, ten, prediction)
    by_image = Interval(0.7, 0.65, 0.75, 300, "image")  # no subjects.csv: nothing to compare
    assert "test set has" not in prediction_check(0.7, by_image, prediction)


def test_a_probed_runs_interval_is_about_the_fold_ensembles_expected_score() -> None:
    probed = {**logged(0.62, 0.82), names.ENSEMBLE_GAIN: 0.02, names.EXPECTED_SCORE: 0.72}
    prediction = cv_prediction_interval(probed)
    assert prediction is not None and (prediction.estimate, prediction.low, prediction.high) == (0.72, 0.62, 0.82)
