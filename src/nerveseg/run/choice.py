"""Which finished cross-validation run a submission is made of when none is named, chosen over plain records.

A run estimates the score of a submission only for the data it was trained on: a model of the demo's synthetic set
(or of another copy of the data) says nothing about these images, however well it scored there. So the candidates
are the finished CV runs of the task whose data fingerprint is that of the training data beside the images to be
predicted; every other run is counted as skipped, with its reason. They are ranked by the task's estimate of a
submission's score (nerve: ``oof_score_postprocessed``, the CV table's "OOF + pp", whose post-processing was
decided on the other folds); runs that lack it (made before it was recorded) come after them, ranked by the task's
ranking metric (two different measures are never compared), and the choice says so. No store is read here: the
store is a ``RunCatalog`` (``track.run_reader.MlflowRuns`` turns MLflow runs into ``CandidateRun`` records), so the
rule is tested on plain values.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from nerveseg import names
from nerveseg.config import DEFAULT_TASK
from nerveseg.errors import NervesegError
from nerveseg.evaluate.uncertainty import Interval
from nerveseg.report.markdown import aligned_columns
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Task

SHORT = 12  # characters of a data fingerprint shown
NAMED = 3  # runs (or fingerprints) named in a one-line summary before "..."
OTHER_TASK, OTHER_DATA, NO_DATA, NO_SCORE = "task", "data", "no fingerprint", "no score"  # why a run is skipped


@dataclass(frozen=True)
class CandidateRun:
    """A finished CV run as the choice sees it: ``fingerprint`` is its data fingerprint ("" when it recorded none),
    ``metrics`` its parent run's metrics."""

    run_id: str
    name: str
    task: str
    config: str = ""
    started: datetime | None = None
    fingerprint: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)

    def value(self, metric: str) -> float | None:
        value = self.metrics.get(metric)
        return float(value) if value is not None and math.isfinite(value) else None


class RunCatalog(Protocol):
    """The finished CV runs of a tracking store, for the verbs that choose one when none is named."""

    @property
    def experiment(self) -> str:
        """The experiment's name, as the messages name where the runs were looked for."""

    def candidates(self) -> list[CandidateRun]:
        """Every finished CV run of the experiment, newest first."""


@dataclass(frozen=True)
class Ranked:
    """A run trained on the data, with the number it is ranked by (``metric``: the estimate, or the fallback)."""

    run: CandidateRun
    metric: str
    value: float


@dataclass(frozen=True)
class RunChoice:
    """The runs trained on the data, best first, and the runs skipped with their reasons (``reason -> runs``)."""

    task: Task
    fingerprint: str | None  # None: the data was not compared (any run of the task is a candidate)
    ranked: tuple[Ranked, ...]
    skipped: Mapping[str, tuple[CandidateRun, ...]]

    @property
    def best(self) -> Ranked | None:
        return self.ranked[0] if self.ranked else None

    def skipped_line(self) -> str:
        """``skipped 3 runs: 2 trained on other data (fingerprint 1a2b3c4d5e6f), 1 of task isbi2012``, or ""."""
        parts = []
        for reason, runs in self.skipped.items():
            if reason == OTHER_TASK:
                tasks = Counter(run.task for run in runs)
                parts += [f"{count} of task {task}" for task, count in sorted(tasks.items())]
            elif reason == OTHER_DATA:
                shown = _listed(sorted({run.fingerprint[:SHORT] for run in runs}))
                parts.append(f"{len(runs)} trained on other data (fingerprint {shown})")
            elif reason == NO_DATA:
                parts.append(f"{len(runs)} with no data fingerprint recorded")
            else:
                parts.append(f"{len(runs)} with neither {self.task.estimate_metric} nor {self.task.ranking_metric}")
        total = sum(len(runs) for runs in self.skipped.values())
        return f"skipped {total} run{'s' * (total != 1)}: {', '.join(parts)}" if total else ""

    def chosen_line(self) -> str:
        """Which run was chosen and why: its estimate (with its prediction interval when recorded) among how many."""
        best = self.best
        assert best is not None, "chosen_line needs a run trained on the data"
        data = "" if self.fingerprint is None else f" trained on this data (fingerprint {self.fingerprint[:SHORT]})"
        among = f"{len(self.ranked)} finished {self.task.name} run{'s' * (len(self.ranked) != 1)}{data}"
        line = f"chose {best.run.name} ({best.run.run_id}): {estimate_text(best)}, the best of {among}"
        fallbacks = sum(r.metric != self.task.estimate_metric for r in self.ranked)
        if fallbacks:
            line += (
                f"; {fallbacks} of them lack{'s' * (fallbacks == 1)} {self.task.estimate_metric} (made before it was "
                f"recorded): ranked after the others, by {self.task.ranking_metric}"
            )
        return line

    def no_match(self, experiment: str, raw_dir: object) -> NervesegError:
        """One line: no run was trained on the data (in ``raw_dir``), which runs there are and on what data, what
        to do."""
        by_data: dict[str, list[str]] = {}
        for run in (run for reason in (OTHER_DATA, NO_DATA, NO_SCORE) for run in self.skipped.get(reason, ())):
            by_data.setdefault(run.fingerprint[:SHORT] or "unrecorded", []).append(run.name)
        groups = [f"{len(named)} on data {fp} ({_listed(named)})" for fp, named in by_data.items()]
        tasks = Counter(run.task for run in self.skipped.get(OTHER_TASK, ()))
        groups += [f"{count} of task {task}" for task, count in sorted(tasks.items())]
        which = f"no finished cross-validation run of task {self.task.name} in MLflow experiment {experiment!r}"
        if self.fingerprint is None:
            which += f" has {self.task.estimate_metric} or {self.task.ranking_metric}"
        else:
            which += f" was trained on the data in {raw_dir} (fingerprint {self.fingerprint[:SHORT]})"
        return NervesegError(
            f"{which}; its finished CV runs: {'; '.join(groups) or 'none'}. Train one on this data (python "
            "src/cv_train.py --raw-dir ...), point MLFLOW_EXPERIMENT_NAME at the runs that were, or pass --run-id"
        )


def _listed(items: Sequence[str]) -> str:
    shown = ", ".join(items[:NAMED])
    return shown + (f" and {len(items) - NAMED} more" if len(items) > NAMED else "")


def cv_prediction_interval(metrics: Mapping[str, float]) -> Interval | None:
    """The CV run's prediction interval (``summarize_cv``) as an Interval, or None for runs without one; its
    estimate is the one the interval is centred on (with an ensemble-gain probe, the fold ensemble's)."""
    keys = (names.OOF_SCORE_POSTPROCESSED, names.OOF_SCORE_POSTPROCESSED_PI_LOW, names.OOF_SCORE_POSTPROCESSED_PI_HIGH)
    if not all(key in metrics for key in keys) or names.PI_SUBJECTS not in metrics:
        return None
    estimate, low, high = (metrics[key] for key in keys)
    estimate = metrics.get(names.EXPECTED_SCORE, estimate)
    return Interval(estimate, low, high, 0, "subject", new_groups=int(metrics[names.PI_SUBJECTS]))


def estimate_text(ranked: Ranked) -> str:
    """``oof_score_postprocessed 0.6755 (95 % PI 0.5628-0.7810 for 10 new subjects)``: the number a run is ranked
    by, with the prediction interval its CV recorded for that estimate."""
    text = f"{ranked.metric} {ranked.value:.4f}"
    interval = cv_prediction_interval(ranked.run.metrics)
    if interval is not None and ranked.metric == names.OOF_SCORE_POSTPROCESSED:  # the estimate the PI is about
        ensemble = f"fold ensemble {interval.estimate:.4f}, " if interval.estimate != ranked.value else ""
        text += f" ({ensemble}95 % PI {interval.low:.4f}-{interval.high:.4f} for {interval.new_groups} new subjects)"
    return text


def default_task(candidates: Iterable[CandidateRun], fingerprints: Mapping[str, str]) -> str:
    """The task to submit for when none is named (``candidates`` come newest first; ``fingerprints``: task -> its
    fingerprint of the data to predict, for the tasks whose data is there): that of the newest run trained on that
    data, else of the newest run of a task whose data is there, else of the newest run (what was trained last),
    else the default task."""
    candidates = list(candidates)
    matching = (run.task for run in candidates if run.fingerprint and fingerprints.get(run.task) == run.fingerprint)
    present = (run.task for run in candidates if run.task in fingerprints)
    return next(matching, next(present, next((run.task for run in candidates), DEFAULT_TASK)))


def _ranked(run: CandidateRun, task: Task) -> Ranked | None:
    for metric in dict.fromkeys((task.estimate_metric, task.ranking_metric)):
        value = run.value(metric)
        if value is not None:
            return Ranked(run, metric, value)
    return None


def choose_run(candidates: Sequence[CandidateRun], task: Task, fingerprint: str | None) -> RunChoice:
    """The finished CV runs of ``task`` trained on the data with ``fingerprint`` (None: any data), ranked by the
    task's estimate in the task's direction, then those that lack it by its ranking metric; the others skipped."""
    ranked: list[Ranked] = []
    skipped: dict[str, list[CandidateRun]] = {}
    for run in candidates:
        reason = None
        if run.task != task.name:
            reason = OTHER_TASK
        elif fingerprint is not None and not run.fingerprint:
            reason = NO_DATA
        elif fingerprint is not None and run.fingerprint != fingerprint:
            reason = OTHER_DATA
        elif (scored := _ranked(run, task)) is None:
            reason = NO_SCORE
        else:
            ranked.append(scored)
        if reason is not None:
            skipped.setdefault(reason, []).append(run)
    # runs with the estimate first: a fallback number is another measure, never compared with an estimate
    ranked.sort(key=lambda r: (r.metric != task.estimate_metric, -r.value if task.higher_is_better else r.value))
    return RunChoice(task, fingerprint, tuple(ranked), {k: tuple(v) for k, v in skipped.items()})


def candidates_table(candidates: Sequence[CandidateRun], choice: RunChoice) -> str:
    """``submit.py --list``: every finished CV run, the runs trained on this data first in the order of the choice
    (``*`` marks the one it takes), then the others newest first, each with its estimate and data."""
    rank = {r.run.run_id: r for r in choice.ranked}
    ordered = [r.run for r in choice.ranked] + [run for run in candidates if run.run_id not in rank]
    rows = [["", "name", "config", "task", "started (UTC)", "estimate", "data", "run id"]]
    for run in ordered:
        scored = (rank.get(run.run_id) or _ranked(run, choice.task)) if run.task == choice.task.name else None
        rows.append(
            [
                "*" if choice.best is not None and run.run_id == choice.best.run.run_id else "",
                run.name,
                run.config or "-",
                run.task,
                run.started.strftime("%Y-%m-%d %H:%M") if run.started else "-",
                estimate_text(scored) if scored is not None else "-",
                _data_text(run, choice),
                run.run_id,
            ]
        )
    return "\n".join(aligned_columns(rows))


def _data_text(run: CandidateRun, choice: RunChoice) -> str:
    if not run.fingerprint:
        return "unrecorded"
    if choice.fingerprint is None or run.task != choice.task.name:
        return run.fingerprint[:SHORT]
    return f"{run.fingerprint[:SHORT]} {'this data' if run.fingerprint == choice.fingerprint else 'other data'}"


@dataclass(frozen=True)
class DataToMatch:
    """The training data a submission's run must have been trained on: its folder and the cache to read its
    fingerprint from (``Task.data_fingerprint``)."""

    raw_dir: Path
    cache_dir: Path
    progress: bool = True

    def fingerprint(self, task: Task) -> str:
        """``task``'s fingerprint of the training data, once the images to predict are known to be there."""
        task.check_test_data(self.raw_dir)  # seconds of hashing would come first otherwise
        try:
            return task.data_fingerprint(self.raw_dir, self.cache_dir, progress=self.progress)
        except NervesegError as err:
            raise NervesegError(
                f"cannot tell which runs were trained on the data in --raw-dir {self.raw_dir} ({err}); "
                "pass --raw-dir the data the run was trained on, or --run-id"
            ) from err

    def fingerprints(self, tasks: Iterable[str]) -> dict[str, str]:
        """task -> fingerprint, for the tasks whose data (training and test) ``raw_dir`` holds."""
        found = {}
        for name in dict.fromkeys(tasks):
            try:
                found[name] = self.fingerprint(get_task(name))
            except NervesegError:
                continue  # no data of that task here
        return found


def choose_cv_run(runs: RunCatalog, task: str | None, data: DataToMatch | None) -> tuple[list[CandidateRun], RunChoice]:
    """The catalog's finished CV runs and ``choose_run`` over them: of ``task`` (None: the task of the newest run
    trained on ``data``, else of the newest run), trained on ``data`` (None: any data)."""
    candidates = runs.candidates()
    fingerprints: dict[str, str] = {}
    if task is None:
        fingerprints = {} if data is None else data.fingerprints(run.task for run in candidates)
        task = default_task(candidates, fingerprints)
    chosen = get_task(task)
    fingerprint = None if data is None else fingerprints.get(chosen.name) or data.fingerprint(chosen)
    return candidates, choose_run(candidates, chosen, fingerprint)


def chosen_runs(
    runs: RunCatalog, run_id: str | None, run_ids: list[str] | None, task: str | None, data: DataToMatch | None = None
) -> list[str]:
    """The run ids given, or the best finished CV run (``choose_cv_run``), printed with why and what was skipped."""
    if run_id is None and not run_ids:
        _, choice = choose_cv_run(runs, task, data)
        if skipped := choice.skipped_line():
            print(skipped)
        if choice.best is None:
            raise choice.no_match(runs.experiment, None if data is None else data.raw_dir)
        print(choice.chosen_line())
        run_id = choice.best.run.run_id
    return [run_id] if run_id is not None else list(run_ids or [])


def list_candidates(runs: RunCatalog, data: DataToMatch, task: str | None) -> str:
    """``submit.py --list``: the catalog's finished CV runs, which of them were trained on ``data`` and the one a
    submission would take, as lines."""
    candidates, choice = choose_cv_run(runs, task, data)
    assert choice.fingerprint is not None, "choose_cv_run compares the data when it is given"
    lines = [
        f"finished CV runs in MLflow experiment {runs.experiment!r}; task {choice.task.name}, data in "
        f"{data.raw_dir}: fingerprint {choice.fingerprint[:SHORT]}",
        candidates_table(candidates, choice),
        f"submit.py takes the run marked *: {choice.chosen_line()}" if choice.best else "no run was trained on it",
        choice.skipped_line(),
    ]
    return "\n".join(line for line in lines if line)
