"""``tune.py --confirm``: the study's best trial re-trained on a fresh fold split and seed, beside its base config.

The best trial was picked as the maximum of many noisy CV estimates on one fold split, so its score is
optimistic, the more so the more trials were run (the winner's curse). Confirming re-trains the best trial's
config with another ``seed`` (which picks both the fold split and the training seeds) and reports its confirmed
estimate beside the selected one: their gap is the selection's optimism plus the noise of one more CV. The base
config the study started from is trained on the same fresh split, and the two are compared pairwise
(``run.comparison``): did the search find anything at all?

Both CVs are nested under the study's MLflow run and tagged with their role; the study run gets the numbers as
metrics and tags and the printed report as ``confirm.txt``, and a comparison run records the paired comparison.
Finished confirmation runs are reused and an interrupted one resumed, so running ``--confirm`` again costs
nothing.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna

from nerveseg.config import TrainConfig, load_config, param_strings
from nerveseg.errors import NervesegError
from nerveseg.paths import FOLDS_DIR, PROCESSED_DIR, RAW_DIR
from nerveseg.report.markdown import aligned_columns
from nerveseg.run.comparison import Comparison, compare_runs
from nerveseg.run.cross_validate import cross_validate
from nerveseg.run.store import CVPaths
from nerveseg.tasks import get_task
from nerveseg.track import schema
from nerveseg.track.comparison_run import interval_metrics, log_comparison
from nerveseg.track.cv_parents import params_differ
from nerveseg.track.mlflow_store import MlflowStore
from nerveseg.track.run_reader import MlflowRunReader
from nerveseg.track.store import MlflowSettings, download_artifacts, load_mlflow_settings, log_metrics, setup_mlflow
from nerveseg.tune.storage import check_storage, make_storage, with_installed_driver
from nerveseg.tune.study_tracker import BASE_CONFIG_ARTIFACT, STUDY_NAME_TAG, STUDY_RUN_ATTR, best_trial

# tune.py --confirm: the best trial's config and the study's base config re-trained on a fresh split and seed
CONFIRM_ROLE_TAG = "optuna.confirm_role"  # on those CV runs: "best" or "baseline"
CONFIRM_SEED_TAG = "optuna.confirm_seed"  # on them and on the study run: the fresh seed
CONFIRM_RUN_TAG_PREFIX = "optuna.confirm_run."  # study run: + "selected", "best", "baseline", "comparison" -> run id
CONFIRM_SELECTED = "confirm_selected_value"  # study run metrics: the best trial's value as the study selected it,
CONFIRM_VALUE = "confirm_value"  # ... the same config's value on the fresh split and seed,
CONFIRM_GAP = "confirm_gap"  # ... confirmed - selected,
CONFIRM_BASELINE_VALUE = "confirm_baseline_value"  # ... and the base config's value on that split
CONFIRM_REPORT_ARTIFACT = "confirm.txt"  # study run: the confirmation as tune.py printed it


def confirm_metric(name: str) -> str:
    """The study run's metric of the best-versus-base comparison on the fresh split, e.g. confirm_paired_difference."""
    return f"confirm_{name}"


FRESH_SEED_OFFSET = 1000  # the default fresh seed is the base config's + this (beyond any fold's seed + k)
BEST_ROLE, BASELINE_ROLE = "best", "baseline"
SELECTED_ROLE = "selected"  # the best trial's own run, as the study selected it


@dataclass(frozen=True)
class ConfirmSettings:
    """Which study to confirm, where its data is, and the fresh seed (None: the base seed + FRESH_SEED_OFFSET)."""

    study_name: str
    storage: str
    raw_dir: Path = RAW_DIR
    cache_dir: Path = PROCESSED_DIR
    folds_dir: Path = FOLDS_DIR
    seed: int | None = None
    progress: bool = True


@dataclass(frozen=True)
class ConfirmResult:
    """The selected, confirmed and base-config metrics, the paired comparison (A: base config, B: best) and runs."""

    study_name: str
    trial_number: int
    n_complete: int
    objective: str
    seed: int
    selected: dict[str, float]
    confirmed: dict[str, float]
    baseline: dict[str, float]
    comparison: Comparison
    run_ids: dict[str, str] = field(default_factory=dict)  # by role, and the comparison run's

    @property
    def gap(self) -> float:
        """Confirmed minus selected value of the study's objective."""
        return self.confirmed[self.objective] - self.selected[self.objective]

    def describe(self) -> str:
        """The report ``tune.py --confirm`` prints and the study run keeps."""
        rows = [["", "selected", "confirmed", "gap", "base config"]]
        for metric in dict.fromkeys([self.objective, self.comparison.metric]):
            values = [self.selected.get(metric), self.confirmed.get(metric), self.baseline.get(metric)]
            gap = None if None in values[:2] else values[1] - values[0]
            rows.append([metric, *(_number(v) for v in values[:2]), _number(gap, "+"), _number(values[2])])
        difference = self.comparison.differences[0]
        return "\n".join(
            [
                f"confirm study {self.study_name}: trial {self.trial_number}, the best of {self.n_complete} complete "
                f"trials, re-trained on a fresh fold split and training seed ({self.seed}), beside the base config",
                *aligned_columns(rows),
                f"best vs base config on the fresh split: {difference.describe()}",
            ]
        )


def _number(value: float | None, sign: str = "") -> str:
    return "n/a" if value is None else f"{value:{sign}.4f}"


def _load_study(settings: ConfirmSettings) -> optuna.Study:
    storage_url = with_installed_driver(settings.storage)
    check_storage(storage_url)
    try:
        return optuna.load_study(study_name=settings.study_name, storage=make_storage(storage_url))
    except KeyError as err:
        raise NervesegError(
            f"no study {settings.study_name!r} in {settings.storage}; run its trials first (tune.py --trials N)"
        ) from err


def _base_config(client: mlflow.MlflowClient, study_run_id: str, tracking_uri: str) -> TrainConfig:
    """The config the study started from, as its MLflow run keeps it."""
    try:
        client.get_run(study_run_id)
    except mlflow.exceptions.MlflowException as err:
        raise NervesegError(
            f"the study's MLflow run {study_run_id} is not in this tracking store; point MLFLOW_TRACKING_URI at the "
            "store the study was run with"
        ) from err
    with tempfile.TemporaryDirectory() as tmp:
        path = download_artifacts(study_run_id, BASE_CONFIG_ARTIFACT, tmp, tracking_uri=tracking_uri)
        return load_config(path)


def confirmation_configs(
    study_name: str, base: TrainConfig, params: Mapping[str, Any], seed: int
) -> dict[str, TrainConfig]:
    """The best trial's config and the base config, both on the fresh ``seed`` (folds and training)."""
    return {
        BEST_ROLE: base.replace(**params, seed=seed, name=f"{study_name}-confirm-best"),
        BASELINE_ROLE: base.replace(seed=seed, name=f"{study_name}-confirm-baseline"),
    }


@dataclass(frozen=True)
class _Context:
    settings: ConfirmSettings
    mlflow_settings: MlflowSettings
    client: mlflow.MlflowClient
    study_run_id: str
    seed: int
    base: TrainConfig
    out: Callable[[str], None]


def _confirmation_run(ctx: _Context, role: str, config: TrainConfig) -> str:
    """The FINISHED confirmation CV of ``role`` with ``config``'s params: reused, resumed, or trained now."""
    experiment_id = ctx.client.get_run(ctx.study_run_id).info.experiment_id
    query = f"{schema.children_filter(ctx.study_run_id, schema.CV_RUN)} and tags.`{CONFIRM_ROLE_TAG}` = '{role}'"
    runs = ctx.client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"])
    matching = [run for run in runs if not params_differ(run, param_strings(config))]
    finished = [run for run in matching if run.info.status == "FINISHED"]
    if finished:
        ctx.out(f"confirm: reusing the finished {role} run {finished[0].info.run_id}")
        return finished[0].info.run_id
    ctx.out(f"confirm: {'resuming' if matching else 'training'} {config.name} (seed {config.seed})")
    tags = {STUDY_NAME_TAG: ctx.settings.study_name, CONFIRM_ROLE_TAG: role}
    tags[CONFIRM_SEED_TAG] = str(ctx.seed)
    store = MlflowStore(ctx.mlflow_settings, resume=bool(matching), nested_under=ctx.study_run_id, parent_tags=tags,
                        progress=ctx.settings.progress)  # fmt: skip
    paths = CVPaths(ctx.settings.raw_dir, ctx.settings.cache_dir, ctx.settings.folds_dir)
    result = cross_validate(config, paths, store, progress=ctx.settings.progress)
    if result.final is None:
        raise RuntimeError(f"the CV returned no summary for the {role} confirmation run {result.parent_id}")
    return result.parent_id


def _log_on_study_run(ctx: _Context, result: ConfirmResult) -> None:
    difference = result.comparison.differences[0]
    values = {
        CONFIRM_SELECTED: result.selected[result.objective],
        CONFIRM_VALUE: result.confirmed[result.objective],
        CONFIRM_GAP: result.gap,
        CONFIRM_BASELINE_VALUE: result.baseline[result.objective],
        **{confirm_metric(name): value for name, value in interval_metrics(difference).items()},
    }
    log_metrics(ctx.client, ctx.study_run_id, values)
    tags = {CONFIRM_SEED_TAG: str(result.seed), schema.VERDICT_TAG: difference.verdict}
    tags.update({f"{CONFIRM_RUN_TAG_PREFIX}{role}": run_id for role, run_id in result.run_ids.items()})
    for key, value in tags.items():
        ctx.client.set_tag(ctx.study_run_id, key, value)
    ctx.client.log_text(ctx.study_run_id, result.describe() + "\n", CONFIRM_REPORT_ARTIFACT)


def _context(settings: ConfirmSettings, study: optuna.Study, out: Callable[[str], None]) -> _Context:
    """The study's MLflow run, the tracking store, and the fresh seed checked against the base config's."""
    study_run_id = study.user_attrs.get(STUDY_RUN_ATTR)
    if study_run_id is None:
        raise NervesegError(f"study {settings.study_name!r} has no MLflow run; it was not started by tune.py")
    mlflow_settings = load_mlflow_settings()
    setup_mlflow(mlflow_settings)
    client = mlflow.MlflowClient(mlflow_settings.tracking_uri)
    base = _base_config(client, study_run_id, mlflow_settings.tracking_uri)
    seed = base.seed + FRESH_SEED_OFFSET if settings.seed is None else settings.seed
    if seed == base.seed:
        raise NervesegError(f"--confirm-seed {seed} is the study's own seed; a confirmation needs a fresh one")
    return _Context(settings, mlflow_settings, client, study_run_id, seed, base, out)


def _train_confirmations(ctx: _Context, configs: dict[str, TrainConfig]) -> dict[str, str]:
    """Role -> FINISHED run id; when the best trial's params are the base config's, one run serves both."""
    run_ids = {BEST_ROLE: _confirmation_run(ctx, BEST_ROLE, configs[BEST_ROLE])}
    unnamed = [{**param_strings(configs[role]), "name": ""} for role in (BEST_ROLE, BASELINE_ROLE)]
    if unnamed[0] == unnamed[1]:
        run_ids[BASELINE_ROLE] = run_ids[BEST_ROLE]
    else:
        run_ids[BASELINE_ROLE] = _confirmation_run(ctx, BASELINE_ROLE, configs[BASELINE_ROLE])
    return run_ids


def confirm_study(settings: ConfirmSettings, *, out: Callable[[str], None] = print) -> ConfirmResult:
    """Re-train the study's best config and its base config on a fresh split, compare, and log on the study run."""
    study = _load_study(settings)
    best = best_trial(study)
    if best is None:
        raise NervesegError(f"study {settings.study_name!r} has no complete trial to confirm; run trials first")
    ctx = _context(settings, study, out)
    run_ids = _train_confirmations(ctx, confirmation_configs(settings.study_name, ctx.base, best.params, ctx.seed))
    uri = ctx.mlflow_settings.tracking_uri
    readers = [MlflowRunReader(ctx.client, run_ids[role], uri) for role in (BASELINE_ROLE, BEST_ROLE)]
    comparison = compare_runs(readers)
    run_ids[schema.COMPARISON_RUN], _ = log_comparison(
        comparison, readers, ctx.mlflow_settings, nested_under=ctx.study_run_id
    )
    objective = get_task(ctx.base.task).ranking_metric
    selected = {objective: float(best.value)}
    if best.user_attrs.get(STUDY_RUN_ATTR):
        run_ids[SELECTED_ROLE] = best.user_attrs[STUDY_RUN_ATTR]
        selected = {**MlflowRunReader(ctx.client, run_ids[SELECTED_ROLE], uri).metrics(), **selected}
    n_complete = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    result = ConfirmResult(
        settings.study_name, best.number, n_complete, objective, ctx.seed, selected,
        readers[1].metrics(), readers[0].metrics(), comparison, run_ids,
    )  # fmt: skip
    _log_on_study_run(ctx, result)
    return result


__all__ = [
    "BASELINE_ROLE",
    "BEST_ROLE",
    "FRESH_SEED_OFFSET",
    "SELECTED_ROLE",
    "ConfirmResult",
    "ConfirmSettings",
    "confirm_study",
    "confirmation_configs",
]
