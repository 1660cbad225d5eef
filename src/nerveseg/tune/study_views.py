"""What a study shows people: its objective's name and what its intermediate values are (for optuna-dashboard
and ``trials_dataframe``), and the plots on its MLflow run.

Optuna knows an objective only as "Objective 0" and an intermediate value only by its "Step" unless told;
here the objective is named ``cv_score_mean`` and the study's user attrs (and, when optuna-dashboard is
installed, the study's dashboard note) say that a step is a fold index. The plots use integer trial ticks,
and parameter importances are drawn only once enough trials completed for them to mean something: with
three near-equal trials, fANOVA still names one parameter with confidence.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable

import mlflow
import optuna
from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from nerveseg.names import CV_SCORE_MEAN

OBJECTIVE_NAME = CV_SCORE_MEAN  # what CVObjective returns for the nerve task (others: their ranking_metric)
MIN_TRIALS_FOR_IMPORTANCE = 8  # completed trials before parameter importances are plotted
OBJECTIVE_ATTR = "objective"
STEP_ATTR = "intermediate_step"
VALUE_ATTR = "intermediate_value"
OBJECTIVE_TEXT = (
    f"{OBJECTIVE_NAME}: mean over the cross-validation folds of the competition score (Dice at 580x420), maximised"
)
STEP_TEXT = "fold index (0-based): one report per finished fold, never per epoch"
# What a trial's intermediate value at step k is, per ``objective.ReportMode`` (as ``PruningListener`` reports it).
INTERMEDIATE_VALUES = {
    "running_mean": "mean competition score of the folds finished so far (folds 0..step)",
    "per_fold": "the competition score of fold `step` alone (the Wilcoxon pruner pairs folds between trials)",
}


def objective_name(study: optuna.Study) -> str:
    """The study's objective as ``describe_study`` named it (the task's ranking metric)."""
    return (study.metric_names or [OBJECTIVE_NAME])[0]


def describe_study(
    study: optuna.Study,
    report_mode: str,
    *,
    note: bool,
    objective: str = OBJECTIVE_NAME,
    objective_text: str = OBJECTIVE_TEXT,
) -> None:
    """Name the objective and say what intermediate values are, in the study's storage (idempotent).

    ``objective``/``objective_text``: the task's ranking metric and what it means (nerve: Dice, maximised).

    ``note`` also writes the optuna-dashboard note (Markdown on the study's page); it is done once, when the
    study is created, because each call adds a version. Skipped when optuna-dashboard is not installed.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([objective])
    study.set_user_attr(OBJECTIVE_ATTR, objective_text)
    study.set_user_attr(STEP_ATTR, STEP_TEXT)
    study.set_user_attr(VALUE_ATTR, INTERMEDIATE_VALUES[report_mode])
    if not note:
        return
    try:
        from optuna_dashboard import save_note
    except ImportError:
        return
    save_note(
        study,
        f"## {study.study_name}\n\n- objective: {objective_text}\n- intermediate values: step = {STEP_TEXT}; "
        f"value = {INTERMEDIATE_VALUES[report_mode]}\n- each trial is an MLflow CV run nested under the study's "
        "run; the trial's user attr `mlflow_run_id` names it\n",
    )


def study_description(study: optuna.Study, best: FrozenTrial, params_trial: int, params_current: bool) -> str:
    """The study run's Markdown description: the best trial, its params, and what the numbers mean."""
    trials = study.get_trials(deepcopy=False)
    width = max([len(key) for key in best.params] + [1])
    shown = {key: f"{value:.4g}" if isinstance(value, float) else str(value) for key, value in best.params.items()}
    rows = [f"{key.ljust(width)}  {value}" for key, value in shown.items()]  # params and tags keep full precision
    if params_current:
        params_note = f"this run's params are the best trial's (trial {params_trial})"
    else:
        params_note = (
            f"this run's params are trial {params_trial}'s, the first best: MLflow params cannot change once "
            f"logged; the best trial's are above, in the best.* tags and in best_params.json"
        )
    lines = [
        f"### Optuna study {study.study_name}",
        "",
        f"best: trial {best.number}, {objective_name(study)} {best.value:.4f} "
        f"({_completed(study)} of {len(trials)} trials completed so far)",
        "",
        "```text",
        *rows,
        "```",
        "",
        f"- objective: {study.user_attrs.get(OBJECTIVE_ATTR, OBJECTIVE_TEXT)}",
        f"- intermediate values: step = {STEP_TEXT}; value = {study.user_attrs.get(VALUE_ATTR, 'see the pruner')}",
        f"- {params_note}",
        f"- best run: {best.user_attrs.get('mlflow_run_id', 'unknown')} (the trial's CV run, nested under this one)",
    ]
    return "\n".join(lines) + "\n"


def _completed(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def _history(study: optuna.Study) -> Figure:
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as ovm

    axes = ovm.plot_optimization_history(study, target_name=objective_name(study))
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers, never 0.5
    axes.set_xlabel("trial number")
    return axes.figure


def _importances(study: optuna.Study) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from optuna.visualization import matplotlib as ovm

    completed = _completed(study)
    if completed >= MIN_TRIALS_FOR_IMPORTANCE:
        return ovm.plot_param_importances(study, target_name=objective_name(study)).figure
    figure = Figure(figsize=(7, 1.4))  # replaced by the real plot once the study has enough trials
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    axes.set_axis_off()
    axes.text(
        0.5, 0.5,
        f"Parameter importances need {MIN_TRIALS_FOR_IMPORTANCE} completed trials; this study has {completed}.\n"
        f"Run {MIN_TRIALS_FOR_IMPORTANCE - completed} more (tune.py --trials counts the study's total).",
        ha="center", va="center", fontsize=10,
    )  # fmt: skip
    return figure


def _parallel(study: optuna.Study) -> Figure:
    from optuna.visualization import matplotlib as ovm

    axes = ovm.plot_parallel_coordinate(study, target_name=objective_name(study))
    return (axes.flat[0] if hasattr(axes, "flat") else axes).figure


STUDY_PLOTS: dict[str, Callable[[optuna.Study], Figure]] = {
    "plots/optimization_history.png": _history,
    "plots/param_importances.png": _importances,
    "plots/parallel_coordinate.png": _parallel,
}


def log_study_plots(client: mlflow.MlflowClient, run_id: str, study: optuna.Study) -> list[str]:
    """Optimisation history, parameter importances and parallel coordinates as PNG artifacts.

    Uses ``optuna.visualization.matplotlib`` (plotly is not a dependency). A plot that cannot be drawn
    (e.g. no complete trial yet) is skipped with a warning; importances below ``MIN_TRIALS_FOR_IMPORTANCE``
    completed trials are a short note saying how many more are needed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logged = []
    for artifact_file, plot in STUDY_PLOTS.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = plot(study)
            if figure.get_figheight() > 2:  # Optuna's own plots; the importances note keeps its small size
                figure.set_size_inches(10, 6)
            figure.tight_layout()
            client.log_figure(run_id, figure, artifact_file)
            logged.append(artifact_file)
        except Exception as err:
            print(f"warning: skipped {artifact_file}: {type(err).__name__}: {err}", file=sys.stderr)
        finally:
            plt.close("all")
    return logged


__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "OBJECTIVE_NAME", "describe_study", "log_study_plots", "study_description"]
