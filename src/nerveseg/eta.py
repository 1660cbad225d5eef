"""How long the rest of a cross-validation will take: a clock fed the times its folds and epochs start and end.

``run.cross_validate`` feeds it ``time.monotonic()`` readings and prints its lines; the tests feed it invented
times. Nothing here reads a clock, so the estimate is a pure function of what was fed:

- an epoch costs the median of the epochs timed so far (the median, because each fold's first epoch also traces
  and compiles the model), so the first estimate comes after the first epoch and improves with every one;
- a fold costs its epochs at that rate plus the rest of its time: building the model before, predicting the
  held-out fold after, and what its first epoch took beyond the rate (every fold traces a new model), measured on
  the folds finished so far (until one is, what the running fold has spent so far beyond its epochs' rate).

Only the folds this call trains count: ``--fold k`` is one fold, ``--resume`` the folds still missing, plus
``extra`` fold-sized trainings after them (the ensemble-gain probe, which trains fold 0 once more). A fold
stopped early (``checkpoint: inner``) makes the estimate for the folds after it a little pessimistic. The CV's
summary after the last fold (post-processing, bootstrap, plots) is not part of the estimate. The share done is
that of the epochs, so it only grows (a share of the estimated time went back whenever an epoch ran slower).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def format_duration(seconds: float) -> str:
    """``41 s``, ``3 min 12 s``, ``2 h 05 min``: a measured time, to the second below an hour."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_estimate(seconds: float) -> str:
    """``about 40 s``, ``about 7 min``, ``about 2 h 05 min``: an estimate, no more precise than it is."""
    if seconds < 60:
        return f"about {max(10, round(seconds / 10) * 10)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    return f"about {minutes // 60} h {minutes % 60:02d} min"


@dataclass
class _RunningFold:
    fold: int
    position: int  # 1-based among the folds trained here
    start: float
    epoch_start: float | None = None
    epochs_done: int = 0
    last_epoch: float = 0.0


def _spent_around(running: _RunningFold, now: float, epoch: float) -> float:
    """Seconds the running fold has spent so far beyond its finished epochs at ``epoch`` seconds each (its set-up,
    and its first epoch's tracing), leaving out the epoch under way."""
    in_epoch = 0.0 if running.epoch_start is None else now - running.epoch_start
    return now - running.start - running.epochs_done * epoch - in_epoch


class CVClock:
    """The progress of one call's folds (``folds``, in training order, each ``epochs`` epochs, then ``extra``
    fold-sized trainings) and its ETA."""

    def __init__(self, folds: Sequence[int], epochs: int, extra: int = 0) -> None:
        self.folds = list(folds)
        self.epochs, self.extra = epochs, extra
        self._epoch_seconds: list[float] = []
        self._around_epochs: list[float] = []  # per finished fold: its seconds beyond its epochs at the rate
        self._started: float | None = None
        self._finished = 0
        self._running: _RunningFold | None = None

    # ------------------------------------------------------------------------------------------ fed times

    def fold_started(self, fold: int, now: float) -> None:
        if self._started is None:
            self._started = now
        self._running = _RunningFold(fold, self._finished + 1, now)

    def epoch_started(self, now: float) -> None:
        if self._running is not None:
            self._running.epoch_start = now

    def epoch_ended(self, now: float) -> None:
        running = self._running
        if running is None or running.epoch_start is None:
            return
        seconds = now - running.epoch_start
        self._epoch_seconds.append(seconds)
        running.last_epoch = seconds
        running.epochs_done += 1
        running.epoch_start = None

    def fold_ended(self, now: float) -> str:
        """Close the running fold; returns its line (its time, the CV's share done and time left)."""
        running = self._running
        if running is None:
            raise RuntimeError("fold_ended without fold_started")
        seconds = now - running.start
        self._around_epochs.append(_spent_around(running, now, self.epoch_seconds() or 0.0))
        self._finished += 1
        self._running = None
        head = f"fold {running.fold} ({running.position}/{len(self.folds)}) done in {format_duration(seconds)}"
        if self._finished >= len(self.folds):
            count = f"{len(self.folds)} fold{'s' if len(self.folds) > 1 else ''}"
            head = f"{head}; {count} trained in {format_duration(self.elapsed(now))}"
            return f"{head}; {self.outlook(now)}" if self.extra else head
        return f"{head}; {self.outlook(now)}"

    # ------------------------------------------------------------------------------------------ estimates

    def elapsed(self, now: float) -> float:
        return 0.0 if self._started is None else now - self._started

    def epoch_seconds(self) -> float | None:
        """What one epoch costs, as far as measured (None before the first epoch has ended)."""
        return statistics.median(self._epoch_seconds) if self._epoch_seconds else None

    def remaining(self, now: float) -> float | None:
        """Seconds until the last fold of this call ends; None until an epoch has been timed."""
        epoch = self.epoch_seconds()
        if epoch is None:
            return None
        running, around = self._running, self._around_fold(now, epoch)
        left = 0.0
        if running is not None:
            in_epoch = 0.0 if running.epoch_start is None else min(now - running.epoch_start, epoch)
            epochs_left = max(0, self.epochs - running.epochs_done) * epoch - in_epoch
            left += epochs_left + max(0.0, around - _spent_around(running, now, epoch))
        not_started = len(self.folds) + self.extra - self._finished - (running is not None)
        return left + not_started * (self.epochs * epoch + around)

    def _around_fold(self, now: float, epoch: float) -> float:
        """A fold's seconds beyond its epochs' rate: the mean of the finished folds', else the running fold's so far."""
        if self._around_epochs:
            return statistics.fmean(self._around_epochs)
        return 0.0 if self._running is None else _spent_around(self._running, now, epoch)

    def outlook(self, now: float) -> str:
        """``CV 40 % done, about 7 min left``, or what is still unknown."""
        left = self.remaining(now)
        if left is None:
            return "time left known after the first epoch"
        # the share of epochs done (a finished fold counts whole, stopped early or not), not of the estimated
        # time: it never goes back when an epoch runs slow
        running = 0 if self._running is None else self._running.epochs_done
        done = (self._finished * self.epochs + running) / max((len(self.folds) + self.extra) * self.epochs, 1)
        return f"CV {100 * done:.0f} % done, {format_estimate(left)} left"

    def epoch_line(self, now: float) -> str | None:
        """The last finished epoch's line (its time and the outlook); None before any epoch of this fold ended."""
        running = self._running
        if running is None or running.epochs_done == 0:
            return None
        return (
            f"fold {running.fold} ({running.position}/{len(self.folds)}) epoch {running.epochs_done}/{self.epochs} "
            f"took {format_duration(running.last_epoch)}; {self.outlook(now)}"
        )
