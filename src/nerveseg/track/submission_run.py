"""Submissions kept in MLflow: a child run "submission" of the CV run, and the experiment's one "leaderboard" run.

``MlflowSubmissions`` is the MLflow side of ``run.submit.make_submission`` (``TrackedRuns``: the runs to choose
from, a registered model's run, the record) and of ``run.leaderboard`` (``SubmissionRecords``: the submission runs
found by id or by their file's hash, their Kaggle tags and scores, the table and plot). A submission run holds the
submission's params, metrics and tags (``run.submit.submission_params`` and the like), the file and the
post-processing applied; a post-processing decided now for one run is also logged on that run, so the next
submission reuses it. The leaderboard's plot and table belong to no single submission, so they are logged on the
experiment's one run tagged ``leaderboard`` (created the first time, replaced on every call): the MLflow UI then
always shows the current plot in one place, while each submission run keeps only its own scores.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

from mlflow.entities import Param, Run, RunStatus
from mlflow.exceptions import MlflowException

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_write_bytes, sha256_file
from nerveseg.run.leaderboard import SubmissionRecord
from nerveseg.run.resolved_run import DECIDED
from nerveseg.run.submit import SubmissionResult, Written, submission_metrics, submission_params, submission_tags
from nerveseg.track import schema
from nerveseg.track.registry import run_of_model
from nerveseg.track.run_reader import MlflowRuns, get_run, run_name
from nerveseg.track.store import log_metrics

# the experiment's one "leaderboard" run (its RUN_TYPE_TAG value), which keeps the current plot and table
LEADERBOARD_RUN = "leaderboard"
TRUST_PLOT_ARTIFACT = f"{names.PLOTS_DIR}/trust_your_cv.png"
LEADERBOARD_TABLE_ARTIFACT = "leaderboard.txt"


class MlflowSubmissions(MlflowRuns):
    """The configured store's CV runs and their submission runs (``run.submit.TrackedRuns``,
    ``run.leaderboard.SubmissionRecords``)."""

    # ---------------------------------------------------------------------------------------- submitting

    def run_of_model(self, uri: str) -> str:
        return run_of_model(self.client, uri)

    def record(self, written: Written) -> SubmissionResult:
        """A post-processing decided now for one run is kept on that run; the submission is a FINISHED child run
        "submission" of the (first) CV run, in its experiment, with params, metrics and the file."""
        client, cv_run = self.client, written.runs[0].run_id
        if written.source == DECIDED:
            client.log_dict(cv_run, written.decision.to_json(), names.POSTPROCESSING_ARTIFACT)
        tags = {schema.PARENT_TAG: cv_run, schema.RUN_TYPE_TAG: schema.SUBMISSION_RUN, **submission_tags(written)}
        experiment_id = client.get_run(cv_run).info.experiment_id
        run_id = client.create_run(experiment_id, run_name=schema.SUBMISSION_RUN, tags=tags).info.run_id
        try:
            log_metrics(client, run_id, submission_metrics(written))
            params = [Param(k, str(v)[: names.MAX_PARAM_LENGTH]) for k, v in submission_params(written).items()]
            client.log_batch(run_id, params=params)
            client.log_artifact(run_id, str(written.file.path), names.SUBMISSION_DIR)
            client.log_dict(run_id, written.decision.to_json(), names.POSTPROCESSING_ARTIFACT)
        except BaseException:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
            raise
        client.set_terminated(run_id, "FINISHED")
        return SubmissionResult.of(written, submission_run_id=run_id)

    # ----------------------------------------------------------------------------------- the leaderboard

    def submission(self, run_id: str) -> SubmissionRecord:
        run = get_run(self.client, run_id)
        if run.data.tags.get(schema.RUN_TYPE_TAG) != schema.SUBMISSION_RUN:
            raise NervesegError(
                f"run {run_id} ({run_name(run)}) is not a submission run; pass the id submit.py printed "
                '("MLflow submission run ...") or the submission\'s CSV with --csv'
            )
        return _recorded(run)

    def submission_of_file(self, path: Path) -> SubmissionRecord:
        experiment_id = self.experiment_id()
        if not Path(path).is_file():
            raise NervesegError(f"--csv {path} does not exist; pass the CSV submit.py wrote (in submissions/)")
        digest = sha256_file(path)
        runs = self._submission_runs(experiment_id, f" and tags.`{names.SUBMISSION_SHA_TAG}` = '{digest}'")
        if not runs:
            raise NervesegError(
                f"--csv {path}: no submission run of this experiment recorded a file with these bytes; pass "
                "--submission-run-id, or set MLFLOW_EXPERIMENT_NAME to the experiment its CV run is in"
            )
        return _recorded(runs[0])

    def submissions(self, experiment: str | None = None) -> list[SubmissionRecord]:
        return [_recorded(run) for run in self._submission_runs(experiment or self.experiment_id())]

    def cv_run(self, run_id: str) -> tuple[str, Mapping[str, float]] | None:
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None
        return run_name(run), run.data.metrics

    def log(self, sub: SubmissionRecord, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        if metrics:
            log_metrics(self.client, sub.run_id, metrics)
        for key, value in tags.items():
            self.client.set_tag(sub.run_id, key, value)

    def publish(self, experiment: str | None, table: str, plot_png: bytes | None) -> str:
        """The table and plot on the experiment's one "leaderboard" run (created, FINISHED, the first time)."""
        run_id = self._leaderboard_run(experiment or self.experiment_id())
        self.client.log_text(run_id, table + "\n", LEADERBOARD_TABLE_ARTIFACT)
        if plot_png is not None:
            with tempfile.TemporaryDirectory(prefix="nerveseg-leaderboard-") as tmp:
                atomic_write_bytes(Path(tmp) / TRUST_PLOT_ARTIFACT, plot_png)
                self.client.log_artifacts(run_id, tmp)
        return run_id

    # ------------------------------------------------------------------------------------------- helpers

    def _submission_runs(self, experiment_id: str, extra: str = "") -> list[Run]:
        query = f"tags.`{schema.RUN_TYPE_TAG}` = '{schema.SUBMISSION_RUN}' and attributes.status = 'FINISHED'{extra}"
        return self.client.search_runs(
            [experiment_id], query, max_results=10_000, order_by=["attributes.start_time DESC"]
        )

    def _leaderboard_run(self, experiment_id: str) -> str:
        query = f"tags.`{schema.RUN_TYPE_TAG}` = '{LEADERBOARD_RUN}'"
        runs = self.client.search_runs([experiment_id], query, max_results=1, order_by=["attributes.start_time ASC"])
        if runs:
            return runs[0].info.run_id
        run = self.client.create_run(
            experiment_id, run_name=LEADERBOARD_RUN, tags={schema.RUN_TYPE_TAG: LEADERBOARD_RUN}
        )
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return run.info.run_id


def _recorded(run: Run) -> SubmissionRecord:
    """A submission run as ``run.leaderboard`` reads it: its CV runs are its ``run_ids`` param (the first is its
    parent), or its parent for runs logged without that param."""
    ids = run.data.params.get(names.RUN_IDS_PARAM) or run.data.tags.get(schema.PARENT_TAG, "")
    cv_runs = tuple(filter(None, ids.split(",")))
    return SubmissionRecord(run.info.run_id, cv_runs, run.info.experiment_id, run.data.metrics, run.data.tags)
