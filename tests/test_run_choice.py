"""Which run ships when none is named (``run.choice``), on plain records: only runs trained on the data to predict,
ranked by the cross-fitted estimate (issue 29)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.run.choice import CandidateRun, candidates_table, choose_run, default_task
from nerveseg.tasks import get_task

NERVE, ISBI = get_task("nerve"), get_task("isbi2012")
HERE, DEMO, OLD = "a" * 64, "d" * 64, "0" * 64  # fingerprints: the data to predict, the demo's, an older copy


def run(name: str, fingerprint: str = HERE, task: str = "nerve", **metrics: float) -> CandidateRun:
    return CandidateRun(
        name, name, task, config=name, started=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), fingerprint=fingerprint,
        metrics=metrics,
    )  # fmt: skip


def scores(estimate: float, mean: float) -> dict[str, float]:
    return {names.OOF_SCORE_POSTPROCESSED: estimate, names.CV_SCORE_MEAN: mean}


def test_a_run_trained_on_other_data_is_never_chosen_even_when_it_scores_higher() -> None:
    demo = run("demo", DEMO, **scores(0.95, 0.90))
    old = run("old", OLD, **scores(0.90, 0.85))
    mine = run("baseline", **scores(0.61, 0.55))
    choice = choose_run([demo, old, mine], NERVE, HERE)
    assert choice.best is not None and choice.best.run is mine
    assert [r.run for r in choice.ranked] == [mine]
    assert choice.skipped_line() == f"skipped 2 runs: 2 trained on other data (fingerprint {OLD[:12]}, {DEMO[:12]})"
    assert choice.chosen_line().startswith(
        "chose baseline (baseline): oof_score_postprocessed 0.6100, the best of 1 finished nerve run trained on "
        f"this data (fingerprint {HERE[:12]})"
    )


def test_runs_are_ranked_by_the_cross_fitted_estimate_not_the_fold_mean() -> None:
    raw_best = run("raw_best", **scores(0.64, 0.70))  # the higher fold mean ...
    interval = {names.OOF_SCORE_POSTPROCESSED_PI_LOW: 0.56, names.OOF_SCORE_POSTPROCESSED_PI_HIGH: 0.78}
    honest = run("honest", **scores(0.68, 0.58), **interval, **{names.PI_SUBJECTS: 10})  # ... the higher estimate
    choice = choose_run([raw_best, honest], NERVE, HERE)
    assert [r.run.name for r in choice.ranked] == ["honest", "raw_best"]
    assert all(r.metric == names.OOF_SCORE_POSTPROCESSED for r in choice.ranked)
    assert "oof_score_postprocessed 0.6800 (95 % PI 0.5600-0.7800 for 10 new subjects)" in choice.chosen_line()
    assert choice.skipped_line() == ""


def test_a_run_without_the_estimate_falls_back_to_the_fold_mean_after_the_others_and_says_so() -> None:
    older = run("older", **{names.CV_SCORE_MEAN: 0.99})  # made before the estimate was recorded
    newer = run("newer", **scores(0.60, 0.55))
    choice = choose_run([older, newer], NERVE, HERE)
    assert [(r.run.name, r.metric) for r in choice.ranked] == [
        ("newer", names.OOF_SCORE_POSTPROCESSED),
        ("older", names.CV_SCORE_MEAN),  # two measures are never compared: it comes after
    ]
    assert "1 of them lacks oof_score_postprocessed (made before it was recorded)" in choice.chosen_line()
    alone = choose_run([older], NERVE, HERE)
    assert alone.best is not None and alone.best.run is older
    assert alone.chosen_line().startswith("chose older (older): cv_score_mean 0.9900")
    assert "ranked after the others, by cv_score_mean" in alone.chosen_line()


def test_isbi_runs_keep_their_ranking_lowest_v_rand_error_and_other_tasks_are_skipped() -> None:
    worse = run("worse", task="isbi2012", cv_v_rand_error_mean=0.20)
    better = run("better", task="isbi2012", cv_v_rand_error_mean=0.06)
    nerve = run("nerve_run", **scores(0.99, 0.99))
    choice = choose_run([worse, nerve, better], ISBI, HERE)
    assert [r.run.name for r in choice.ranked] == ["better", "worse"]
    assert choice.skipped_line() == "skipped 1 run: 1 of task nerve"


def test_runs_with_no_fingerprint_or_no_score_are_skipped_with_their_reason() -> None:
    unrecorded = run("unrecorded", "", **scores(0.9, 0.9))
    unscored = run("unscored")
    choice = choose_run([unrecorded, unscored], NERVE, HERE)
    assert choice.best is None
    assert choice.skipped_line() == (
        "skipped 2 runs: 1 with no data fingerprint recorded, 1 with neither oof_score_postprocessed nor cv_score_mean"
    )
    assert choose_run([unrecorded], NERVE, None).best is not None  # data not compared (register.py)


def test_no_run_on_this_data_is_one_line_naming_the_runs_and_their_data() -> None:
    candidates = [run("demo", DEMO, **scores(0.7, 0.6)), run("demo2", DEMO), run("em", task="isbi2012")]
    error = choose_run(candidates, NERVE, HERE).no_match("nerveseg", "data/raw")
    assert isinstance(error, NervesegError) and "\n" not in str(error)
    assert str(error).startswith(
        "no finished cross-validation run of task nerve in MLflow experiment 'nerveseg' was trained on the data in "
        f"data/raw (fingerprint {HERE[:12]}); its finished CV runs: 2 on data {DEMO[:12]} (demo, demo2); "
        "1 of task isbi2012. Train one on this data"
    )
    assert "its finished CV runs: none." in str(choose_run([], NERVE, HERE).no_match("nerveseg", "data/raw"))


def test_without_a_task_the_newest_run_trained_on_this_data_decides_it() -> None:
    newest_em = run("em", OLD, task="isbi2012")
    nerve = run("nerve_run")
    assert default_task([newest_em, nerve], {"nerve": HERE}) == "nerve"
    assert default_task([newest_em, nerve], {"nerve": OLD}) == "nerve"  # no run on it, but nerve data is here
    assert default_task([newest_em, nerve], {}) == "isbi2012"  # no data here: what was trained last
    assert default_task([], {}) == "nerve"


def test_the_list_marks_the_chosen_run_and_says_which_data_each_was_trained_on() -> None:
    demo = run("demo", DEMO, **scores(0.95, 0.9))
    mine = run("mine", **scores(0.61, 0.55))
    choice = choose_run([demo, mine], NERVE, HERE)
    header, first, second = candidates_table([demo, mine], choice).splitlines()
    assert header.split() == ["name", "config", "task", "started", "(UTC)", "estimate", "data", "run", "id"]
    assert first.startswith("*  mine") and f"{HERE[:12]} this data" in first and "0.6100" in first
    assert second.startswith("   demo") and f"{DEMO[:12]} other data" in second
    assert "2026-01-02 03:04" in first


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_estimate_counts_as_missing(value: float) -> None:
    choice = choose_run([run("odd", **scores(value, 0.5))], NERVE, HERE)
    assert choice.best is not None and choice.best.metric == names.CV_SCORE_MEAN
