"""The parent run of a cross-validation: create one, or find the one to join or resume and check it may be.

A parent may be joined only while unfinished, with identical params, on the same data and folds
file; ``--resume`` picks the newest such parent of a config and marks fold runs left RUNNING by a
dead process KILLED.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags

from nerveseg import names
from nerveseg.config import TrainConfig, config_to_yaml, param_strings
from nerveseg.errors import NervesegError, is_interruption
from nerveseg.io_utils import atomic_write_text
from nerveseg.run.cross_validate import say
from nerveseg.track import schema
from nerveseg.track.run_reader import fold_runs, newest_finished_fold_runs
from nerveseg.track.schema import ERROR_TAG, PARENT_TAG, RUN_TYPE_TAG, STOPPED_TAG

STALE_RUN = "stale"  # STOPPED_TAG of a fold run found RUNNING by --resume (its process died)


# ------------------------------------------------------------------------------------- parent runs


def params_differ(run: Run, params: Mapping[str, str]) -> list[str]:
    return [
        f"{k}: run {run.data.params.get(k)!r} vs config {v!r}" for k, v in params.items() if run.data.params.get(k) != v
    ]


def existing_parent(client: MlflowClient, run_id: str, config: TrainConfig, params: Mapping[str, str]) -> Run:
    """The parent run ``run_id`` after checking it may be joined: a cv run, unfinished, same params."""
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise NervesegError(f"parent run {run_id!r} was not found in the tracking store ({err.message})") from err
    if run.data.tags.get(RUN_TYPE_TAG) != schema.CV_RUN:
        raise NervesegError(
            f"run {run_id} is not a cross-validation parent run (tag {RUN_TYPE_TAG}="
            f"{run.data.tags.get(RUN_TYPE_TAG)!r}); pass the id of a cv_train parent run"
        )
    if run.info.status == "FINISHED":
        raise NervesegError(
            f"parent run {run_id} ({run.info.run_name}) is FINISHED and is never modified; "
            "start a new cross-validation without --parent-run-id/--resume"
        )
    differences = params_differ(run, params)
    if differences:
        raise NervesegError(
            f"parent run {run_id} was started with other settings ({'; '.join(differences)}); "
            "use the same config, --folds, --epochs and --seed, or start a new run"
        )
    return run


def resumable_parent(
    client: MlflowClient, experiment_id: str, config: TrainConfig, params: Mapping[str, str], nested_under: str | None
) -> Run:
    """The most recent unfinished parent run with this config's name and identical params."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_TYPE_TAG}` = '{schema.CV_RUN}'",
        max_results=10_000,
        order_by=["attributes.start_time DESC"],
    )
    for run in runs:
        if (
            run.info.run_name == config.name
            and run.info.status != "FINISHED"
            and not params_differ(run, params)
            and (nested_under is None or run.data.tags.get(PARENT_TAG) == nested_under)
        ):
            return run
    raise NervesegError(
        f"--resume found no unfinished parent run named {config.name!r} with identical params in this experiment; "
        "pass --parent-run-id, or start a new run without --resume"
    )


def describe(run: Run) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run.info.start_time / 1000))
    return f"{run.info.run_id} ({run.info.run_name}, status {run.info.status}, started {started})"


def check_same_data(run: Run, fingerprint: str, folds_sha: str) -> None:
    """Folds of one parent must come from one data set and one split, or the OOF score is meaningless."""
    tags = run.data.tags
    if tags.get(names.DATA_FINGERPRINT) not in (None, fingerprint):
        raise NervesegError(
            f"parent run {run.info.run_id} was trained on data {tags[names.DATA_FINGERPRINT][:12]}, but --raw-dir "
            f"now holds data {fingerprint[:12]}; use the same data or start a new run"
        )
    if tags.get(schema.FOLDS_SHA_TAG) not in (None, folds_sha):
        raise NervesegError(
            f"parent run {run.info.run_id} used another folds file (sha256 {tags[schema.FOLDS_SHA_TAG][:12]}, "
            f"now {folds_sha[:12]}); restore experiments/folds from the run's folds/ artifact or start a new run"
        )


def create_parent(
    client: MlflowClient,
    experiment_id: str,
    config: TrainConfig,
    tags: Mapping[str, str],
    folds_file: Path,
    work: Path,
) -> Run:
    run = client.create_run(experiment_id, run_name=config.name, tags=resolve_tags(dict(tags)))
    run_id = run.info.run_id
    try:  # a full artifact store fails here: the new parent must not stay RUNNING forever
        client.log_batch(run_id, params=[Param(k, v) for k, v in param_strings(config).items()])
        config_path = work / names.CONFIG_ARTIFACT
        atomic_write_text(config_path, config_to_yaml(config))
        client.log_artifact(run_id, str(config_path))
        client.log_artifact(run_id, str(folds_file), names.FOLDS_DIR)
    except BaseException as err:
        mark_stopped(client, [run_id], err, on_purpose=is_interruption(err))
        raise
    return run


def mark_stopped(client: MlflowClient, run_ids: Sequence[str], err: BaseException, *, on_purpose: bool) -> None:
    """Mark the runs that are not FINISHED KILLED (on purpose: Ctrl-C, an observer) or FAILED, with the stopper
    or the error's first 500 characters in a tag; never hides ``err`` (the store may be what failed)."""
    status = "KILLED" if on_purpose else "FAILED"
    stopper = "KeyboardInterrupt" if is_interruption(err) else type(err).__name__
    tag = (STOPPED_TAG, stopper) if on_purpose else (ERROR_TAG, f"{type(err).__name__}: {err}"[:500])
    for run_id in run_ids:
        try:
            if client.get_run(run_id).info.status == "FINISHED":
                continue
            client.set_tag(run_id, *tag)
            client.set_terminated(run_id, status)
        except Exception as log_err:  # the store may be what failed; the original error matters more
            say(f"warning: could not mark run {run_id} {status}: {log_err}")


def kill_stale_fold_runs(client: MlflowClient, parent: Run) -> None:
    """Mark the parent's fold runs still RUNNING as KILLED: ``--resume`` continues a CV whose process
    died (``kill -9``, a lost machine) without marking them, and their replacements are trained now."""
    for runs in fold_runs(client, parent).values():
        for run in runs:
            if run.info.status == "RUNNING":
                client.set_tag(run.info.run_id, STOPPED_TAG, STALE_RUN)
                client.set_terminated(run.info.run_id, "KILLED")
                say(f"marked stale fold run {describe(run)} KILLED")


def choose_parent(
    client: MlflowClient,
    experiment_id: str,
    config: TrainConfig,
    requested: list[int],
    parent_run_id: str | None,
    resume: bool,
    nested_under: str | None,
) -> tuple[Run | None, list[int]]:
    """The parent to continue (None: a new one) and the requested folds it still lacks; no data read yet."""
    params = param_strings(config)
    if parent_run_id is not None:
        parent = existing_parent(client, parent_run_id, config, params)
    elif resume:
        parent = resumable_parent(client, experiment_id, config, params, nested_under)
    else:
        return None, requested
    if resume:
        kill_stale_fold_runs(client, parent)
    finished = newest_finished_fold_runs(client, parent)
    already = [k for k in requested if k in finished]
    if already and not resume:
        raise NervesegError(
            f"fold(s) {already} of parent run {parent.info.run_id} already FINISHED and are never retrained; "
            "pass --resume to train only the missing folds"
        )
    say(f"{'resuming' if resume else 'joining'} parent run {describe(parent)}, finished folds {sorted(finished)}")
    return parent, [k for k in requested if k not in finished]
