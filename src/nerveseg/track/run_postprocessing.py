"""Post-processing for the runs a submission uses: the run's stored ``postprocessing.json``, or
decided now on the (mean) out-of-fold predictions of the runs against the training masks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import resize_probabilities
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Decision
from nerveseg.track import schema
from nerveseg.track.run_models import RunModels
from nerveseg.track.schema import (
    DATA_FINGERPRINT_TAG,
    OOF_PROBS_ARTIFACT,
    POSTPROCESSING_ARTIFACT,
    OofArrays,
)
from nerveseg.track.store import (
    download_artifacts,
)

# ---------------------------------------------------------------------------------- post-processing


def _load_oof(run: RunModels, workdir: Path, tracking_uri: str) -> OofArrays:
    try:
        path = download_artifacts(
            run.run_id, OOF_PROBS_ARTIFACT, workdir / run.run_id / schema.OOF_DIR, tracking_uri=tracking_uri
        )
    except NervesegError as err:
        raise NervesegError(
            f"run {run.run_id} ({run.name}) has neither {POSTPROCESSING_ARTIFACT} nor {OOF_PROBS_ARTIFACT}; "
            "post-processing cannot be decided without out-of-fold predictions"
        ) from err
    return schema.load_oof(path)


def _check_same_training_data(runs: list[RunModels]) -> str | None:
    """The one data fingerprint the runs were trained on (None if untagged); refuses a mix."""
    fingerprints = {r.tags[DATA_FINGERPRINT_TAG] for r in runs if r.tags.get(DATA_FINGERPRINT_TAG)}
    if len(fingerprints) > 1:
        raise NervesegError(
            f"the runs were trained on different data ({DATA_FINGERPRINT_TAG} tags "
            + ", ".join(f"{r.name}={str(r.tags.get(DATA_FINGERPRINT_TAG))[:12]}" for r in runs)
            + "); their out-of-fold predictions cannot be averaged, ensemble runs of one data set"
        )
    return next(iter(fingerprints), None)


def _mean_oof(runs: list[RunModels], oofs: list[OofArrays]) -> OofArrays:
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


@dataclass(frozen=True)
class Sources:
    """Where the runs' artifacts are downloaded from and to, and where the training data is."""

    workdir: Path
    tracking_uri: str
    raw_dir: Path
    cache_dir: Path
    progress: bool = True


def decide_for_runs(runs: list[RunModels], sources: Sources) -> Decision:
    """Post-processing decided by the runs' task on their (mean) OOF probabilities against the training masks."""
    expected = _check_same_training_data(runs)
    workdir, tracking_uri, raw_dir, progress = sources.workdir, sources.tracking_uri, sources.raw_dir, sources.progress
    oof = _mean_oof(runs, [_load_oof(r, workdir, tracking_uri) for r in runs])
    config = runs[0].config
    task = get_task(config.task)
    data = task.load_train(config, raw_dir, sources.cache_dir, progress=progress)
    if expected is not None and data.fingerprint != expected:
        raise NervesegError(
            f"the training data in {raw_dir} (fingerprint {data.fingerprint[:12]}) is not the data run "
            f"{runs[0].run_id} was trained on ({str(expected)[:12]}); point --raw-dir at that data"
        )
    index_of = {image_id: k for k, image_id in enumerate(data.ids.astype(str).tolist())}
    missing = [i for i in oof.ids.tolist() if i not in index_of]
    if missing:
        raise NervesegError(
            f"{len(missing)} out-of-fold ids are not in the training data at {raw_dir}, e.g. {missing[:5]}"
        )
    rows = np.array([index_of[i] for i in oof.ids.tolist()])
    return task.decide_postprocessing(data, rows, oof.probs, oof.presence, progress=progress)


def _stored_decision(run: RunModels, workdir: Path, tracking_uri: str) -> Decision | None:
    """The run's ``postprocessing.json``, validated; None when the run has none (older or interrupted)."""
    try:
        path = download_artifacts(run.run_id, POSTPROCESSING_ARTIFACT, workdir / run.run_id, tracking_uri=tracking_uri)
    except NervesegError:
        return None
    source = f"{POSTPROCESSING_ARTIFACT} of run {run.run_id} ({run.name})"
    try:
        values = json.loads(Path(path).read_text())
    except ValueError as err:  # JSONDecodeError
        raise NervesegError(f"{source} is not valid JSON ({err}); delete it to decide the settings again") from err
    return get_task(run.config.task).decision_from_json(values, source=source)


def postprocessing_for_runs(client: MlflowClient, runs: list[RunModels], sources: Sources) -> tuple[Decision, str]:
    """The settings and where they came from: a single run's stored ``postprocessing.json`` ("run"), or
    decided now on the OOF predictions ("decided", then stored on that run; "decided_ensemble")."""
    if len(runs) == 1:
        stored = _stored_decision(runs[0], sources.workdir, sources.tracking_uri)
        if stored is not None:
            return stored, "run"
    decision = decide_for_runs(runs, sources)
    if len(runs) > 1:
        return decision, "decided_ensemble"
    client.log_dict(runs[0].run_id, decision.to_json(), POSTPROCESSING_ARTIFACT)
    return decision, "decided"
