"""The MLflow side of a study: one parent run per study, the trials' CV runs nested under it, the
trial states and the best trial recorded on it, and Optuna's plots as its artifacts.

The study run carries the best trial's params as MLflow params, so it sits in the runs table beside the
trials with comparable columns. MLflow params are immutable (logging another value for a key is an error),
so they are logged once, from the first best trial, together with ``params_trial`` saying which trial they
are from; later bests update the ``best.*`` tags, ``best_params.json`` and the run's description, and the tag
``best.params_current`` turns "false" when the params no longer match the best trial. Rewriting the params
would need a new run, and then the trials would no longer be nested under one run per study.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import mlflow
import optuna
from optuna.trial import FrozenTrial, TrialState

from nerveseg.errors import NervesegError
from nerveseg.names import FAIL_REASON_ATTR
from nerveseg.track.schema import CV_RUN, DESCRIPTION_TAG, RUN_TYPE_TAG, children_filter
from nerveseg.tune.storage import StudyLock
from nerveseg.tune.study_views import log_study_plots, study_description

# MLflow names of the study side (the CV runs' names are in nerveseg.track.schema).
STUDY_RUN_TYPE = "study"
TRIAL_NUMBER_TAG = "optuna.trial_number"
TRIAL_STATE_TAG = "optuna.state"
STUDY_NAME_TAG = "optuna.study_name"
FAIL_REASON_TAG = "optuna.fail_reason"
STUDY_RUN_ATTR = "mlflow_run_id"  # study user attr: the MLflow run id of the study's parent run
WORKERS_ATTR = "workers_started"  # study user attr: how many workers have joined (seeds the sampler)
INTERRUPTED = "interrupted"  # the fail_reason kind of a trial stopped by Ctrl-C
PARAMS_TRIAL_PARAM = "params_trial"  # study run param: the trial whose params the run's params are
PARAMS_CURRENT_TAG = "best.params_current"  # "true" while the run's params are the best trial's
BASE_CONFIG_ARTIFACT = "base_config.yaml"  # study run: the config the study was started from (its baseline)

# A trial's MLflow state tag, from Optuna's state.
_STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}


# --------------------------------------------------------------------------------------------
# MLflow side of a study
# --------------------------------------------------------------------------------------------


class StudyTracker:
    """Owns the study's MLflow parent run: creation (once, under the study lock), per-trial tags,
    best-so-far logging, and the end-of-study plots and trial table."""

    def __init__(self, client: mlflow.MlflowClient, experiment_id: str, study: optuna.Study, lock: StudyLock) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.study = study
        self.lock = lock
        self.run_id: str | None = None

    def ensure_study_run(self, tags: Mapping[str, str], artifacts: Mapping[str, str]) -> str:
        """Reuse the run stored in the study's ``mlflow_run_id`` user attr, or create it.

        Called with the study lock held, so two workers joining a new study create one run.
        """
        run_id = self.study.user_attrs.get(STUDY_RUN_ATTR)
        if run_id is not None:
            try:
                self.client.get_run(run_id)
            except Exception as err:
                raise NervesegError(
                    f"study {self.study.study_name!r} records MLflow run {run_id} but the tracking server does not "
                    f"know it ({type(err).__name__}); point MLFLOW_TRACKING_URI at the server used when the study "
                    "started, or use a new --study name"
                ) from None
            self.client.update_run(run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.study.study_name,
                tags={RUN_TYPE_TAG: STUDY_RUN_TYPE, STUDY_NAME_TAG: self.study.study_name, **tags},
            )
            run_id = run.info.run_id
            for artifact_file, text in artifacts.items():
                self.client.log_text(run_id, text, artifact_file)
            self.study.set_user_attr(STUDY_RUN_ATTR, run_id)
        self.run_id = run_id
        return run_id

    def find_trial_run(self, number: int) -> str | None:
        """The MLflow run of one trial (the CV creates it; when the CV raises we only know it by its tags)."""
        if self.run_id is None:
            return None
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"{children_filter(self.run_id, CV_RUN)} and tags.`{TRIAL_NUMBER_TAG}` = '{number}'",
            run_view_type=mlflow.entities.ViewType.ALL,
            max_results=5,
            order_by=["attributes.start_time DESC"],
        )
        return runs[0].info.run_id if runs else None

    def on_trial_end(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: tag the trial's run with its final state, and log a new best."""
        assert self.run_id is not None
        state = _STATE_NAMES.get(trial.state, trial.state.name.lower())
        run_id = trial.user_attrs.get(STUDY_RUN_ATTR) or self.find_trial_run(trial.number)
        if run_id is not None:
            self.client.set_tag(run_id, TRIAL_STATE_TAG, state)
            if trial.value is not None:
                self.client.log_metric(run_id, "trial_value", float(trial.value))
            if FAIL_REASON_ATTR in trial.user_attrs:
                self.client.set_tag(run_id, FAIL_REASON_TAG, trial.user_attrs[FAIL_REASON_ATTR])
        if trial.state == TrialState.COMPLETE:
            # Under the lock, re-read the best: two workers finishing together must not leave an older best.
            with self.lock:
                best = best_trial(study)
                if best is not None and best.number == trial.number:
                    self.log_best(best)

    def log_best(self, best: FrozenTrial) -> None:
        """Record a new best trial: metric, ``best.*`` tags, params (the first time), description, JSON."""
        assert self.run_id is not None
        self.client.log_metric(self.run_id, "best_value", float(best.value), step=best.number)
        for key, value in best.params.items():
            self.client.set_tag(self.run_id, f"best.{key}", str(value))
        self.client.set_tag(self.run_id, "best.trial_number", str(best.number))
        trial_run = best.user_attrs.get(STUDY_RUN_ATTR)
        if trial_run:
            self.client.set_tag(self.run_id, "best.run_id", trial_run)
        params_trial, current = self._log_params_once(best)
        self.client.set_tag(self.run_id, PARAMS_CURRENT_TAG, str(current).lower())
        self.client.set_tag(self.run_id, DESCRIPTION_TAG, study_description(self.study, best, params_trial, current))
        self.client.log_dict(
            self.run_id,
            {"trial_number": best.number, "value": best.value, "params": best.params, "run_id": trial_run},
            "best_params.json",
        )

    def _log_params_once(self, best: FrozenTrial) -> tuple[int, bool]:
        """Log ``best``'s params unless the run has them already; returns (the trial the run's params are from,
        whether they equal ``best``'s)."""
        params = self.client.get_run(self.run_id).data.params
        if PARAMS_TRIAL_PARAM in params:
            current = all(params.get(key) == str(value) for key, value in best.params.items())
            return int(params[PARAMS_TRIAL_PARAM]), current
        values = {**{key: str(value) for key, value in best.params.items()}, PARAMS_TRIAL_PARAM: str(best.number)}
        self.client.log_batch(self.run_id, params=[mlflow.entities.Param(k, v) for k, v in values.items()])
        return best.number, True

    def finish(self, status: str) -> None:
        """Plots and trial table on the study run, then mark it ``status`` (the last worker to stop wins)."""
        assert self.run_id is not None
        log_study_plots(self.client, self.run_id, self.study)
        try:
            frame = self.study.trials_dataframe()
            self.client.log_text(self.run_id, frame.to_csv(index=False), "trials.csv")
        except Exception as err:  # an empty study has no table
            print(f"warning: no trials table for study {self.study.study_name}: {err}", file=sys.stderr)
        self.client.set_terminated(self.run_id, status=status)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None
