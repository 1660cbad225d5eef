"""A comparison of CV runs kept as an MLflow run of its own (run type "comparison"), linked to the runs compared.

The MLflow side of ``run.comparison`` only: its tags name the runs (the baseline first), how each was paired and
the verdict; its metrics hold, for the run at position k (1 = B), the paired difference with its interval, the
share of bootstrap draws in which it is better and the smallest detectable difference (``schema.comparison_key``);
its description, table, subject means and plot are ``run.comparison``'s renderings, with a link to each MLflow
run. The runs compared are FINISHED and are never written to.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.evaluate.paired import PairedDifference
from nerveseg.provenance import git_state
from nerveseg.run.comparison import Comparison, format_comparison, format_markdown, plot_comparison, subject_csv
from nerveseg.run.store import RunReader
from nerveseg.track import schema
from nerveseg.track.run_reader import MlflowRunReader
from nerveseg.track.store import MlflowSettings, log_metrics, setup_mlflow, ui_fragment


def interval_metrics(diff: PairedDifference) -> dict[str, float]:
    """B - A and its interval under their metric names (a comparison run numbers them, a study run prefixes them)."""
    low, high = f"{schema.PAIRED_DIFFERENCE}_ci_low", f"{schema.PAIRED_DIFFERENCE}_ci_high"
    return {schema.PAIRED_DIFFERENCE: diff.difference, low: diff.low, high: diff.high}


def _metrics(comparison: Comparison) -> dict[str, float]:
    values = {}
    for k, diff in enumerate(comparison.differences, 1):
        more = {schema.SHARE_BETTER: diff.share_better, schema.MIN_DETECTABLE_DIFFERENCE: diff.min_detectable}
        values |= {schema.comparison_key(name, k): value for name, value in (interval_metrics(diff) | more).items()}
    return values


def _link(reader: RunReader) -> str:
    if isinstance(reader, MlflowRunReader):
        return f"[{reader.name}]({ui_fragment(reader.experiment_id, reader.run_id)}) (MLflow run `{reader.run_id}`)"
    return f"{reader.name} (LocalStore folder `{reader.run_id}`)"


def _tags(comparison: Comparison, readers: Sequence[RunReader], nested_under: str | None) -> dict[str, str]:
    tags = {
        schema.RUN_TYPE_TAG: schema.COMPARISON_RUN,
        schema.COMPARED_RUNS_TAG: names.truncated_list([reader.run_id for reader in readers]),
        schema.COMPARISON_BASELINE_TAG: readers[0].run_id,
        schema.COMPARISON_METRIC_TAG: comparison.metric,
        names.GIT_COMMIT_TAG: git_state()[0],
        schema.DESCRIPTION_TAG: format_markdown(comparison, [_link(reader) for reader in readers]),
    }
    for k, diff in enumerate(comparison.differences, 1):
        tags[schema.comparison_key(schema.VERDICT_TAG, k)] = diff.verdict
        tags[schema.comparison_key(schema.COMPARISON_PAIRING_TAG, k)] = diff.pairing
    if nested_under is not None:
        tags[schema.PARENT_TAG] = nested_under
    return tags


def log_comparison(
    comparison: Comparison,
    readers: Sequence[RunReader],
    settings: MlflowSettings,
    *,
    nested_under: str | None = None,
) -> tuple[str, str]:
    """Log ``comparison`` of ``readers`` as a FINISHED comparison run; returns (run id, experiment id).

    It goes to the experiment of ``nested_under`` (a study's run) or of the first MLflow run compared, else to
    the settings' experiment.
    """
    client = MlflowClient(settings.tracking_uri)
    tracked = (reader.experiment_id for reader in readers if isinstance(reader, MlflowRunReader))
    experiment_id = client.get_run(nested_under).info.experiment_id if nested_under else next(tracked, None)
    experiment_id = experiment_id or setup_mlflow(settings)
    title = "compare " + " vs ".join(run.name for run in comparison.runs)
    tags = _tags(comparison, readers, nested_under)
    run_id = client.create_run(experiment_id, run_name=title[:250], tags=tags).info.run_id
    log_metrics(client, run_id, _metrics(comparison))
    client.log_text(run_id, format_comparison(comparison) + "\n", schema.COMPARISON_TABLE_ARTIFACT)
    client.log_text(run_id, subject_csv(comparison), schema.SUBJECT_TABLE_ARTIFACT)
    with tempfile.TemporaryDirectory() as tmp:
        plot = plot_comparison(comparison, Path(tmp) / Path(schema.COMPARISON_PLOT_ARTIFACT).name)
        client.log_artifact(run_id, str(plot), names.PLOTS_DIR)
    client.set_terminated(run_id, "FINISHED")
    return run_id, experiment_id
