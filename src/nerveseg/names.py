"""The names a cross-validation is recorded under: the summary's metrics and tags, a fold's split params.

The writer (``tasks.nerve`` finalising a CV run) and the readers (``track.schema`` re-exports these for
``track``, ``tune`` and the tests) take them from here, so a renamed metric fails at import rather than
silently at run time. Plain strings only: importing this module loads nothing else.
"""

CV_SCORE_MEAN = "cv_score_mean"
CV_SCORE_STD = "cv_score_std"
CV_SCORE_CI_LOW = "cv_score_ci_low"
CV_SCORE_CI_HIGH = "cv_score_ci_high"
OOF_SCORE = "oof_score"
EMPTY_BASELINE_SCORE = "empty_baseline_score"
EMPTY_BASELINE_CI_LOW = "empty_baseline_ci_low"
EMPTY_BASELINE_CI_HIGH = "empty_baseline_ci_high"
OOF_SCORE_POSTPROCESSED = "oof_score_postprocessed"  # cross-fitted: decided on the other folds
OOF_SCORE_POSTPROCESSED_CI_LOW = "oof_score_postprocessed_ci_low"
OOF_SCORE_POSTPROCESSED_CI_HIGH = "oof_score_postprocessed_ci_high"
OOF_SCORE_POSTPROCESSED_INSAMPLE = "oof_score_postprocessed_insample"  # decided and scored on the same OOF

# the checkpoint rule of a CV run: last, inner, best_val (the param "checkpoint"), or "mixed" if folds differ;
# named apart from the param so that no name is both a tag and a param
CHECKPOINT_TAG = "checkpoint_rule"
OPTIMISTIC_TAG = "cv_optimistic"  # "true" when the kept epoch was chosen on the scored fold (best_val)


# a fold run's own params about its split (tasks' ``split_params``)
N_TRAIN_PARAM = "n_train"  # items the model is fitted on (less contradictory ones and the inner split, if any)
N_VAL_PARAM = "n_val"
N_INNER_VAL_PARAM = "n_inner_val"  # with checkpoint="inner": training images held out to choose the epoch
VAL_SUBJECTS_PARAM = "val_subjects"  # held-out subjects, a comma list


def fold_score_metric(fold: int) -> str:
    """The parent's metric holding fold ``fold``'s val_score."""
    return f"fold_{fold}_score"
