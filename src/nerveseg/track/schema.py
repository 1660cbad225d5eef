"""The MLflow run schema: the tags, run types and model-package keys that only MLflow runs have.

``track.mlflow_store`` writes cross-validation runs; ``track.run_reader``, ``tune.study`` and the tests
read them. They agree because both sides take the names from here, never from string literals. The names every
store writes (the CV summary's metrics and tags, a fold's params and metrics, the artifact layout) are written by
core code too, so they live in ``nerveseg.names``, and the OOF file format in ``nerveseg.run.fold_files``; each
name has that one home and is imported from it.

A cross-validation is one parent run (``RUN_TYPE_TAG = "cv"``) with one child run per fold
(``"fold"``, tagged ``FOLD_TAG``) and, later, child runs ``"submission"``::

    parent:  config.yaml  folds/<folds file>  oof/oof_probs.npz  oof/oof_image_scores.csv  summary.json
             postprocessing.json  plots/progress.png  plots/subject_scores.png  plots/gallery.png
    fold k:  weights/fold_<k>.weights.h5  oof/oof_fold_<k>.npz  fold_<k>.json  model_summary.txt
             plots/learning_curve.png

Params are the config's stable names (``learning_rate``, ``loss``...), on the parent and on every fold run;
metrics never reuse a param's name: a fold run's per-epoch metrics are ``train_loss``, ``train_dice``,
``val_loss``, ``val_dice`` and ``lr`` (renamed from ``train.fold.HISTORY_KEYS`` when they are logged, see
``epoch_metric_name``), so a runs table can show ``params.learning_rate`` beside ``metrics.lr``.
"""

from __future__ import annotations

from nerveseg import names

# ------------------------------------------------------------------------------------------- tags
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own nesting tag
RUN_NAME_TAG = "mlflow.runName"
RUN_TYPE_TAG = "nerveseg.run_type"
STOPPED_TAG = "nerveseg.stopped"  # exception class that stopped a KILLED run (KeyboardInterrupt, TrialPruned...)
ERROR_TAG = "nerveseg.error"  # first line of the error that FAILED a run
FOLD_TAG = "fold"
DESCRIPTION_TAG = "mlflow.note.content"  # MLflow shows it as the run's description (Markdown)
FOLDS_SHA_TAG = "folds_file_sha256"

# values of RUN_TYPE_TAG
CV_RUN = "cv"
FOLD_RUN = "fold"
SUBMISSION_RUN = "submission"
COMPARISON_RUN = "comparison"  # linked to the runs it compares


# ----------------------------------- a comparison run (compare.py, tune.py --confirm), linked to the runs it compares
COMPARED_RUNS_TAG = "nerveseg.compared_runs"  # the runs compared, the baseline first (MLflow ids or folders)
COMPARISON_BASELINE_TAG = "nerveseg.comparison_baseline"  # the run the others are compared with
COMPARISON_PAIRING_TAG = "nerveseg.comparison_pairing"  # "image" (same data and folds) or "subject"
COMPARISON_METRIC_TAG = "nerveseg.comparison_metric"  # the per-image score compared (its CV metric's name)
COMPARISON_PLOT_ARTIFACT = f"{names.PLOTS_DIR}/paired_differences.png"
COMPARISON_TABLE_ARTIFACT = "comparison.txt"
SUBJECT_TABLE_ARTIFACT = "subject_scores.csv"
PAIRED_DIFFERENCE = "paired_difference"  # B - A, and with _ci_low / _ci_high its interval
SHARE_BETTER = "share_better"  # share of the bootstrap draws in which B is better
MIN_DETECTABLE_DIFFERENCE = "min_detectable_difference"
VERDICT_TAG = "nerveseg.verdict"


def comparison_key(name: str, position: int) -> str:
    """The comparison run's metric or tag ``name`` for the run at ``position`` (1 = the first compared with A)."""
    return f"{name}_{position}"


# --------------------------------------------------------------- the MLflow Model of a CV run (issue 15)
# ``track.model_package`` writes it, ``track.registry`` and the served model read it
MODEL_NAME = "model"  # the LoggedModel's name on the CV parent run (log_model(name=...))
MODEL_CONFIG_ARTIFACT = "config"  # pyfunc artifact keys: the run's config.yaml ...
MODEL_POSTPROCESSING_ARTIFACT = "postprocessing"  # ... its postprocessing.json ...


def model_weights_key(fold: int) -> str:
    """... and fold ``fold``'s weights file."""
    return f"fold_{fold}"


# model_config keys: test-time augmentation on/off, images per forward batch; the task's key and the model's input
# and output columns, which predict.py reads too, are in nerveseg.names
TTA_CONFIG = "tta"
BATCH_SIZE_CONFIG = "predict_batch_size"
MODEL_VERSION_RUN_TAG = "source_run_name"  # a model version's tags besides names.DATA_FINGERPRINT, names.GIT_COMMIT_TAG


# ---------------------------------------------------------------------------------------- searches


def children_filter(parent_run_id: str, run_type: str | None = None) -> str:
    """An MLflow ``search_runs`` filter for the child runs of ``parent_run_id`` (optionally of one type)."""
    query = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    return query if run_type is None else f"{query} and tags.`{RUN_TYPE_TAG}` = '{run_type}'"
