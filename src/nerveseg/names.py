"""The names a cross-validation is recorded under, whatever store keeps it (MLflow or a local folder).

Metrics, tags and params of the CV summary and of a fold, and the artifact layout of a parent and its fold
runs. The writers (the tasks finalising a CV, ``run.cross_validate`` and both stores) and the readers (``run``,
``track``, ``tune`` and the tests) import them from here, so a renamed metric fails at import rather than silently
at run time. What only MLflow runs have (their tags, run types, comparison runs) lives in ``track.schema``. Plain
strings only: importing this module loads nothing.
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
# the 95 % prediction interval of the score on PI_SUBJECTS new subjects (evaluate.uncertainty.prediction_interval)
OOF_SCORE_POSTPROCESSED_PI_LOW = "oof_score_postprocessed_pi_low"
OOF_SCORE_POSTPROCESSED_PI_HIGH = "oof_score_postprocessed_pi_high"
PI_SUBJECTS = "oof_score_postprocessed_pi_subjects"  # m, the new subjects that interval is for
# with config ensemble_gain_probe (tasks.nerve.summary.EnsembleGain): what averaging the K fold models adds to the
# single-model estimate, measured on a pair of models of fold 0; the PI above is then centred on their sum
ENSEMBLE_GAIN = "ensemble_gain"  # scaled to the K members that ship
ENSEMBLE_GAIN_PAIR = "ensemble_gain_pair"  # as measured: the pair's average minus its members' mean
EXPECTED_SCORE = "expected_ensemble_score"  # oof_score_postprocessed + ensemble_gain
# a submission's local score against test masks (its MLflow run's metrics, JsonRecord's file)
TEST_SCORE = "test_score"
TEST_SCORE_CI_LOW = "test_score_ci_low"
TEST_SCORE_CI_HIGH = "test_score_ci_high"
TEST_INSIDE_PI = "test_score_inside_pi"  # 1.0 when the test score lies in the CV run's prediction interval
# what identifies a submission (its MLflow run's tags and params, JsonRecord's file): the file, the CV runs
SUBMISSION_FILE_TAG = "submission_file"  # the file's name
SUBMISSION_SHA_TAG = "submission_sha256"  # its bytes' hash, which finds the record of a CSV even after a rename
RUN_IDS_PARAM = "run_ids"  # the CV runs it ensembles, a comma list
N_TEST_IMAGES = "n_test_images"  # a submission's metric: the test images it predicts
PREDICTED_EMPTY_SHARE = "predicted_empty_share"  # a submission run's share of test images predicted empty
# Kaggle's side of a submission (issue 29, run.leaderboard): its tags once submit.py --kaggle uploaded its file,
KAGGLE_UPLOADED_TAG = "nerveseg.kaggle_uploaded"  # UTC time of the upload (ISO 8601)
KAGGLE_MESSAGE_TAG = "nerveseg.kaggle_message"  # the submission's description on Kaggle
# its leaderboard scores (leaderboard.py) and where they came from ("typed" or "kaggle client"),
LEADERBOARD_PUBLIC = "leaderboard_public_score"
LEADERBOARD_PRIVATE = "leaderboard_private_score"
LEADERBOARD_SOURCE_TAG = "nerveseg.leaderboard_source"
# and the CV estimate's 95 % prediction interval sized for Kaggle's test set (report.leaderboard) beside them
TEST_SET_PI_LOW = "kaggle_test_pi_low"
TEST_SET_PI_HIGH = "kaggle_test_pi_high"
TEST_SET_PI_SUBJECTS = "kaggle_test_pi_subjects"  # the new subjects that interval is for

# the checkpoint rule of a CV run: last, inner, best_val (the param "checkpoint"), or "mixed" if folds differ;
# named apart from the param so that no name is both a tag and a param
CHECKPOINT_TAG = "checkpoint_rule"
GIT_COMMIT_TAG = "git_commit"  # nerveseg.provenance: the commit that trained a run (and a model version's)
OPTIMISTIC_TAG = "cv_optimistic"  # "true" when the kept epoch was chosen on the scored fold (best_val)


# a fold run's own params about its split (tasks' ``split_params``)
N_TRAIN_PARAM = "n_train"  # items the model is fitted on (less contradictory ones and the inner split, if any)
N_VAL_PARAM = "n_val"
N_INNER_VAL_PARAM = "n_inner_val"  # with checkpoint="inner": training images held out to choose the epoch
VAL_SUBJECTS_PARAM = "val_subjects"  # held-out subjects, a comma list

# ISBI 2012 metrics of a membrane map (tasks.isbi2012.metrics), all lower-is-better; runs log them as
# fold_<k>_<name>, cv_<name>_mean/_std, oof_<name> and baseline_all_cell_<name>
V_RAND_ERROR = "v_rand_error"  # the challenge's: 1 - best V_rand after border thinning over the 0.0:0.1:1.0 sweep
V_INFO_ERROR = "v_info_error"  # likewise, 1 - best V_info
ADAPTED_RAND_ERROR = "adapted_rand_error"  # skimage.metrics.adapted_rand_error at one threshold (not the challenge's)
PIXEL_ERROR = "pixel_error"
# a per-epoch log key (and so a fold run's per-epoch metric) of ISBI trainings with epoch_rand_error: true:
# the held-out slices' V_rand error
VAL_V_RAND_ERROR = f"val_{V_RAND_ERROR}"


def fold_score_metric(fold: int) -> str:
    """The parent's metric holding fold ``fold``'s val_score."""
    return f"fold_{fold}_score"


# what identifies the data a CV was trained on: a parent's tag, a key of the folds file and of summary.json
DATA_FINGERPRINT = "data_fingerprint"

# a fold run's params beside the config's (``run.cross_validate.fold_params``)
FOLD_PARAM = "fold"
FOLD_SEED_PARAM = "fold_seed"  # the fold is seeded with config.seed + fold
TASK_PARAM = "task"  # the config field; runs from before it existed are nerve runs
CONFIG_NAME_PARAM = "name"  # the config field: its file's stem, what a CV's parent run is named at first
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value

# a fold run's metrics: its score and the kept epoch's history values
VAL_SCORE = "val_score"  # a fold's full-resolution score of its kept weights
# the monitored fold's Dice at the model's size with the mask emptied where the presence head says no nerve (< 0.5):
# the model as it ships, beside val_dice (the mask head alone), for models with a presence head
VAL_DICE_GATED = "val_dice_gated"
EPOCH_SECONDS = "epoch_seconds"
KEPT_EPOCH = "kept_epoch"  # a fold run's kept (checkpointed) epoch, 1-based
LR_METRIC = "lr"
_HISTORY_RENAMES = {"learning_rate": LR_METRIC}
KEPT_HISTORY_KEYS = ("val_dice", "val_loss", "loss")  # logged as val_dice_kept, val_loss_kept, train_loss_kept


def epoch_metric_name(history_key: str) -> str:
    """The metric name of a per-epoch Keras log key: ``val_*`` as it is, ``learning_rate`` as ``lr``, every
    other (training) key prefixed ``train_``. Params never start with ``train_``/``val_``, so none collide."""
    if history_key in _HISTORY_RENAMES:
        return _HISTORY_RENAMES[history_key]
    return history_key if history_key.startswith("val_") else f"train_{history_key}"


def kept_metric(history_key: str) -> str:
    """The fold run's metric holding ``history_key`` at the kept epoch, e.g. ``val_dice_kept``."""
    return f"{epoch_metric_name(history_key)}_kept"


# the artifact layout of a parent run and its fold runs (the same in an MLflow run and a LocalStore folder)
CONFIG_ARTIFACT = "config.yaml"
FOLDS_DIR = "folds"
PLOTS_DIR = "plots"
WEIGHTS_DIR = "weights"
OOF_DIR = "oof"
OOF_PROBS_FILE = "oof_probs.npz"
OOF_PROBS_ARTIFACT = f"{OOF_DIR}/{OOF_PROBS_FILE}"
# every OOF image's score that the CV's headline post-processed score averages (run.fold_files owns the format)
IMAGE_SCORES_FILE = "oof_image_scores.csv"
IMAGE_SCORES_ARTIFACT = f"{OOF_DIR}/{IMAGE_SCORES_FILE}"
SUMMARY_ARTIFACT = "summary.json"
POSTPROCESSING_ARTIFACT = "postprocessing.json"
MODEL_SUMMARY_ARTIFACT = "model_summary.txt"
SUBMISSION_DIR = "submission"
PROGRESS_ARTIFACT = f"{PLOTS_DIR}/progress.png"  # parent: every fold's curves
SUBJECT_SCORES_ARTIFACT = f"{PLOTS_DIR}/subject_scores.png"  # parent: OOF score per subject
GALLERY_ARTIFACT = f"{PLOTS_DIR}/gallery.png"  # parent: best and worst OOF images
LEARNING_CURVE_ARTIFACT = f"{PLOTS_DIR}/learning_curve.png"  # fold run: its own curves


def weights_file(fold: int) -> str:
    """File name of fold ``fold``'s weights (Keras 3 needs the ``.weights.h5`` ending)."""
    return f"fold_{fold}.weights.h5"


def weights_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s weights on its fold run."""
    return f"{WEIGHTS_DIR}/{weights_file(fold)}"


def oof_fold_file(fold: int) -> str:
    return f"oof_fold_{fold}.npz"


def oof_fold_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s out-of-fold predictions on its fold run."""
    return f"{OOF_DIR}/{oof_fold_file(fold)}"


def fold_facts_artifact(fold: int) -> str:
    """Artifact path of fold ``fold``'s facts (kept epoch, history, standardisation) on its fold run."""
    return f"fold_{fold}.json"


# Optuna trial user attributes that more than one module reads or writes
FAIL_REASON_ATTR = "fail_reason"


def truncated_list(values: list[str], limit: int = MAX_PARAM_LENGTH) -> str:
    """A comma list of at most ``limit`` characters (MLflow's cap on a param value)."""
    text = ",".join(values)
    if len(text) <= limit:
        return text
    for count in range(len(values) - 1, -1, -1):
        shortened = ",".join([*values[:count], f"... (+{len(values) - count} more)"])
        if len(shortened) <= limit:
            return shortened
    raise ValueError(f"limit={limit} is too small for even the note of a cut list; pass at least 20")


# the served model's request and answer (issue 15): the pyfunc model (``track.model_package``) reads the input
# column and writes the outputs, ``run.predict`` sends the one and reads the others, as an HTTP client would
IMAGE_COLUMN = "image"  # input: one encoded image file (TIFF/PNG/JPEG) per row; base64 in JSON
PRESENT_COLUMN = "present"  # outputs (nerve task)
PROBABILITY_COLUMN = "probability"
AREA_COLUMN = "area"
RLE_COLUMN = "rle"
MASK_COLUMN = "mask_png"  # only with params {"return_mask": true}
MEMBRANE_COLUMN = "membrane_tiff"  # output (isbi2012): float32 TIFF of membrane probabilities
RETURN_MASK_PARAM = "return_mask"
TASK_CONFIG = "task"  # the model config's key naming the model's task

# the model registry (issue 15): register.py's and cv_train.py --register's defaults, read by track.registry
REGISTERED_MODEL = "nerveseg"
CHAMPION_ALIAS = "champion"
