"""Finished cross-validations resolved to local files, from either store, and their post-processing.

What a submission (``run.submit``) and a model package (``run.package``) both need of a run: its config, every
fold's weights as local files (``ResolvedRun``), and the post-processing to apply: a single run's stored
``postprocessing.json``, or decided now on the (mean) out-of-fold predictions of the runs against the training
masks. Runs are read through ``run.store.RunReader``, so an MLflow run and a LocalStore folder are alike here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import resize_probabilities
from nerveseg.run.fold_files import OofArrays, load_oof
from nerveseg.run.store import RunReader
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Decision, TrainedModels

RUN, DECIDED, DECIDED_ENSEMBLE = "run", "decided", "decided_ensemble"  # where the post-processing came from


@dataclass(frozen=True)
class ResolvedRun:
    """One finished CV run with its config and one local weights file per fold."""

    reader: RunReader
    config: TrainConfig
    weights_paths: list[Path]

    @property
    def run_id(self) -> str:
        return self.reader.run_id

    @property
    def name(self) -> str:
        return self.reader.name

    def models(self) -> TrainedModels:
        return TrainedModels(self.config, self.weights_paths)


def resolve(reader: RunReader, workdir: Path) -> ResolvedRun:
    """The run's config and fold weights (downloaded under ``workdir`` when its store is remote)."""
    return ResolvedRun(reader, reader.config(), reader.fold_weights(workdir))


@dataclass(frozen=True)
class Sources:
    """Where the runs' files are downloaded to, and where the training data is (to decide post-processing)."""

    workdir: Path
    raw_dir: Path
    cache_dir: Path
    progress: bool = True


def _load_oof(run: ResolvedRun, workdir: Path) -> OofArrays:
    path = run.reader.file(names.OOF_PROBS_ARTIFACT, workdir)
    if path is None:
        raise NervesegError(
            f"run {run.run_id} ({run.name}) has neither {names.POSTPROCESSING_ARTIFACT} nor "
            f"{names.OOF_PROBS_ARTIFACT}; post-processing cannot be decided without out-of-fold predictions"
        )
    return load_oof(path)


def _check_same_training_data(runs: list[ResolvedRun]) -> str | None:
    """The one data fingerprint the runs were trained on (None if unknown); refuses a mix."""
    fingerprints = {r.reader.data_fingerprint for r in runs if r.reader.data_fingerprint}
    if len(fingerprints) > 1:
        raise NervesegError(
            f"the runs were trained on different data ({names.DATA_FINGERPRINT} "
            + ", ".join(f"{r.name}={r.reader.data_fingerprint[:12]}" for r in runs)
            + "); their out-of-fold predictions cannot be averaged, ensemble runs of one data set"
        )
    return next(iter(fingerprints), None)


def _mean_oof(runs: list[ResolvedRun], oofs: list[OofArrays]) -> OofArrays:
    """The runs' OOF probabilities (and presence, when all have it) averaged, rows in the first run's order."""
    ids = oofs[0].ids
    for run, other in zip(runs[1:], oofs[1:], strict=True):
        if not np.array_equal(np.sort(other.ids), np.sort(ids)):
            raise NervesegError(
                f"out-of-fold ids of run {run.run_id} ({run.name}) differ from those of {runs[0].run_id}; "
                "ensemble runs that cover the same training images"
            )
    shape = (runs[0].config.height, runs[0].config.width)
    order = np.argsort(ids)
    probs_sum = np.zeros((len(ids), *shape), np.float32)
    presences = []
    for oof in oofs:
        position = np.argsort(oof.ids)  # align each run's rows to the first run's sorted ids
        probs_sum[order] += resize_probabilities(oof.probs[position], shape)
        if oof.presence is not None:
            aligned = np.empty_like(oof.presence)
            aligned[order] = oof.presence[position]
            presences.append(aligned)
    presence = np.mean(presences, axis=0) if len(presences) == len(oofs) else None
    return OofArrays(ids, probs_sum / len(oofs), presence)


def decide_for_runs(runs: list[ResolvedRun], sources: Sources) -> Decision:
    """Post-processing decided by the runs' task on their (mean) OOF probabilities against the training masks."""
    expected = _check_same_training_data(runs)
    oof = _mean_oof(runs, [_load_oof(r, sources.workdir) for r in runs])
    config, raw_dir = runs[0].config, sources.raw_dir
    task = get_task(config.task)
    data = task.load_train(config, raw_dir, sources.cache_dir, progress=sources.progress)
    if expected is not None and data.fingerprint != expected:
        raise NervesegError(
            f"the training data in {raw_dir} (fingerprint {data.fingerprint[:12]}) is not the data run "
            f"{runs[0].run_id} was trained on ({expected[:12]}); point --raw-dir at that data"
        )
    index_of = {image_id: k for k, image_id in enumerate(data.ids.astype(str).tolist())}
    missing = [i for i in oof.ids.tolist() if i not in index_of]
    if missing:
        raise NervesegError(
            f"{len(missing)} out-of-fold ids are not in the training data at {raw_dir}, e.g. {missing[:5]}"
        )
    rows = np.array([index_of[i] for i in oof.ids.tolist()])
    return task.decide_postprocessing(data, rows, oof.probs, oof.presence, progress=sources.progress)


def stored_decision(run: ResolvedRun, workdir: Path) -> Decision | None:
    """The run's ``postprocessing.json``, validated; None when the run has none (older or interrupted)."""
    path = run.reader.file(names.POSTPROCESSING_ARTIFACT, workdir)
    if path is None:
        return None
    source = f"{names.POSTPROCESSING_ARTIFACT} of run {run.run_id} ({run.name})"
    try:
        values = json.loads(Path(path).read_text())
    except ValueError as err:  # JSONDecodeError
        raise NervesegError(f"{source} is not valid JSON ({err}); delete it to decide the settings again") from err
    return get_task(run.config.task).decision_from_json(values, source=source)


def postprocessing_for_runs(runs: list[ResolvedRun], sources: Sources) -> tuple[Decision, str]:
    """The settings and where they came from: a single run's stored ``postprocessing.json`` (``RUN``), or decided
    now on the OOF predictions (``DECIDED`` for one run, which its store may keep; ``DECIDED_ENSEMBLE``)."""
    if len(runs) == 1:
        stored = stored_decision(runs[0], sources.workdir)
        if stored is not None:
            return stored, RUN
    decision = decide_for_runs(runs, sources)
    return decision, DECIDED if len(runs) == 1 else DECIDED_ENSEMBLE


__all__ = [
    "DECIDED",
    "DECIDED_ENSEMBLE",
    "RUN",
    "ResolvedRun",
    "Sources",
    "decide_for_runs",
    "postprocessing_for_runs",
    "resolve",
    "stored_decision",
]
