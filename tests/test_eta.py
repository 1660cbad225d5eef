"""The CV's ETA (``nerveseg.eta.CVClock``) fed invented times: no clock is read, so every figure is exact."""

from __future__ import annotations

import pytest

from nerveseg.eta import CVClock, format_duration, format_estimate


def run_fold(clock: CVClock, fold: int, start: float, setup: float, epochs: list[float], after: float) -> float:
    """Feed one fold: ``setup`` seconds, then the epochs, then ``after`` seconds; returns the time it ends."""
    now = start + setup
    clock.fold_started(fold, start)
    for seconds in epochs:
        clock.epoch_started(now)
        now += seconds
        clock.epoch_ended(now)
    return now + after


def test_durations_read_as_a_person_would_say_them() -> None:
    assert [format_duration(s) for s in (0.4, 41, 192, 3600 + 5 * 60 + 20)] == [
        "0 s",
        "41 s",
        "3 min 12 s",
        "1 h 05 min",
    ]
    assert [format_estimate(s) for s in (3, 44, 61, 7 * 60 + 20, 7500)] == [
        "about 10 s", "about 40 s", "about 1 min", "about 7 min", "about 2 h 05 min"
    ]  # fmt: skip


def test_no_estimate_before_the_first_epoch_has_ended() -> None:
    clock = CVClock([0, 1, 2], epochs=4)
    clock.fold_started(0, 100.0)
    clock.epoch_started(110.0)
    assert clock.remaining(150.0) is None
    assert clock.epoch_line(150.0) is None
    assert clock.outlook(150.0) == "time left known after the first epoch"


def test_the_first_estimate_counts_every_epoch_of_every_fold_left() -> None:
    clock = CVClock([0, 1, 2], epochs=4)
    clock.fold_started(0, 0.0)
    clock.epoch_started(10.0)  # 10 s of set-up
    clock.epoch_ended(40.0)  # one 30 s epoch
    # this fold: 3 epochs; two more folds of 4 epochs and the 10 s set-up seen so far
    assert clock.remaining(40.0) == pytest.approx(3 * 30 + 2 * (4 * 30 + 10))
    assert clock.epoch_line(40.0) == "fold 0 (1/3) epoch 1/4 took 30 s; CV 8 % done, about 6 min left"


def test_the_estimate_improves_as_epochs_and_folds_finish() -> None:
    clock = CVClock([0, 1], epochs=3)
    end = run_fold(clock, 0, start=0.0, setup=5.0, epochs=[60.0, 20.0, 20.0], after=15.0)
    assert clock.epoch_seconds() == 20.0  # the median: the first epoch's compile time is not taken for the rate
    line = clock.fold_ended(end)
    assert line == "fold 0 (1/2) done in 2 min 0 s; CV 50 % done, about 2 min left"
    # one fold left: 3 epochs at 20 s and the 60 s the finished fold took beyond that rate: its set-up, what it
    # did after its epochs, and its first epoch's 40 s of tracing, which every fold's new model costs again
    assert clock.remaining(end) == pytest.approx(3 * 20 + 60)
    clock.fold_started(1, end)
    clock.epoch_started(end + 5)
    clock.epoch_ended(end + 5 + 20)  # this fold's first epoch took no longer than the rate: 55 s still expected
    assert clock.remaining(end + 25) == pytest.approx(2 * 20 + (60 - 5))
    # halfway through the second epoch, half of it is already spent
    clock.epoch_started(end + 25)
    assert clock.remaining(end + 35) == pytest.approx(10 + 20 + 55)


def test_the_last_fold_says_how_long_the_whole_call_took() -> None:
    clock = CVClock([3], epochs=2)  # --fold 3: that fold only
    end = run_fold(clock, 3, start=1000.0, setup=4.0, epochs=[30.0, 30.0], after=6.0)
    # before a fold has finished, only the set-up seen so far is counted around the epochs
    assert clock.remaining(end - 6.0) == clock.remaining(end) == 0.0
    assert clock.fold_ended(end) == "fold 3 (1/1) done in 1 min 10 s; 1 fold trained in 1 min 10 s"


def test_a_resumed_run_counts_only_the_folds_it_trains() -> None:
    clock = CVClock([3, 4], epochs=2)  # --resume: folds 0-2 finished before
    clock.fold_started(3, 0.0)
    clock.epoch_started(0.0)
    clock.epoch_ended(10.0)
    assert clock.remaining(10.0) == pytest.approx(10 + 2 * 10)
    assert clock.epoch_line(10.0).startswith("fold 3 (1/2) epoch 1/2 took 10 s; CV 25 % done")


def test_a_fold_stopped_early_leaves_no_epochs_behind() -> None:
    clock = CVClock([0, 1], epochs=10)
    end = run_fold(clock, 0, start=0.0, setup=0.0, epochs=[10.0, 10.0], after=0.0)  # early stopping after 2
    assert clock.fold_ended(end).endswith("CV 50 % done, about 2 min left")  # the stopped fold counts whole
    assert clock.remaining(end) == pytest.approx(10 * 10)  # the next fold may run all 10 epochs


def test_the_share_done_never_goes_back_when_an_epoch_runs_slow() -> None:
    clock = CVClock([0], epochs=4)
    clock.fold_started(0, 0.0)
    shares = []
    for start, seconds in [(0.0, 10.0), (10.0, 10.0), (20.0, 60.0)]:  # the third epoch six times slower
        clock.epoch_started(start)
        clock.epoch_ended(start + seconds)
        shares.append(int(clock.outlook(start + seconds).split()[1]))
    assert shares == [25, 50, 75]


def test_ending_a_fold_that_never_started_is_a_bug() -> None:
    with pytest.raises(RuntimeError):
        CVClock([0], epochs=1).fold_ended(1.0)


def test_the_ensemble_gain_probe_counts_as_one_more_fold() -> None:
    clock = CVClock([0, 1], epochs=2, extra=1)  # ensemble_gain_probe: fold 0 once more after the last fold
    end = run_fold(clock, 0, start=0.0, setup=0.0, epochs=[10.0, 10.0], after=0.0)
    assert clock.fold_ended(end) == "fold 0 (1/2) done in 20 s; CV 33 % done, about 40 s left"
    end = run_fold(clock, 1, start=end, setup=0.0, epochs=[10.0, 10.0], after=0.0)
    assert clock.fold_ended(end) == "fold 1 (2/2) done in 20 s; 2 folds trained in 40 s; CV 67 % done, about 20 s left"


def test_every_fold_is_expected_to_trace_its_model_again() -> None:
    """Each fold's first epoch also traces a new model; the next fold is expected to take that time again."""
    clock = CVClock([0, 1], epochs=4)
    end = run_fold(clock, 0, start=0.0, setup=2.0, epochs=[12.0, 5.0, 5.0, 5.0], after=3.0)  # 32 s
    clock.fold_ended(end)
    assert clock.remaining(end) == pytest.approx(32)  # 4 epochs at 5 s, and the 12 s beyond that rate
    clock.fold_started(1, end)
    clock.epoch_started(end + 2.0)
    clock.epoch_ended(end + 14.0)  # the same 7 s of tracing in its first epoch
    assert clock.remaining(end + 14.0) == pytest.approx(3 * 5 + 3)  # what this fold really has left


def test_only_the_nerve_task_trains_after_its_folds_and_only_with_the_probe() -> None:
    from nerveseg.config import TrainConfig, load_config
    from nerveseg.paths import EXPERIMENTS_DIR
    from nerveseg.tasks import get_task

    nerve = get_task("nerve")
    assert nerve.trainings_after_folds(TrainConfig(ensemble_gain_probe=True)) == 1
    assert nerve.trainings_after_folds(TrainConfig(ensemble_gain_probe=False)) == 0
    for name in ("isbi_unet", "toy"):
        config = load_config(EXPERIMENTS_DIR / f"{name}.yaml")
        assert get_task(config.task).trainings_after_folds(config) == 0
