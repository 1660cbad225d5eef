"""The ISBI 2012 EM membrane task (``task: isbi2012``) behind the ``Task`` interface.

- Data: ``--raw-dir`` itself when it holds the ISBI layout (the TIFF stacks, or ``train/image``),
  otherwise ``<raw-dir>/isbi2012`` (so the default ``data/raw`` finds ``data/raw/isbi2012``).
- Folds: contiguous blocks of slices (``tasks.isbi2012.data.block_folds``), written once to the same kind of
  folds file as the nerve task's, named by the data fingerprint and K (seed 0: blocks ignore it).
- Ranking: the CV mean of the challenge's V_rand error (``tasks.isbi2012.challenge_metrics``), LOWER is better.
- Submission: a float32 TIFF stack of membrane probabilities averaged over the fold models with
  flip/rotation TTA, after the OOF-chosen clean-up, written atomically to a new file and read back,
  and beside it a folder of PNGs of the thresholded maps (``submissions/<name>/<k>.png``).

Everything only this task knows is a module of this package: ``data`` (the two layouts, block folds),
``synthetic`` (the stand-in data), ``trainer`` (its fold's hooks: crops with ``elastic`` deformation and
``border_weights``, or the patch CNN's ``windows``), ``membranes`` (whole-slice prediction with flip/rotation
views, which training, the submission and ``serving`` share), ``challenge_metrics`` and ``metrics``, ``summary``
(the folds' numbers), ``postprocess`` (the OOF-chosen clean-up), ``membrane_postprocess`` (its settings and
application) and ``submission`` (the TIFF stack). The model families stay in ``model.families``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.names import MEMBRANE_COLUMN, N_TEST_IMAGES, N_TRAIN_PARAM, N_VAL_PARAM, V_RAND_ERROR
from nerveseg.tasks.base import CVFinal, Served, ServedColumn, SharedStages, SubmissionFile
from nerveseg.tasks.isbi2012.challenge_metrics import ChallengeScores
from nerveseg.tasks.isbi2012.data import TIFF_NAMES, IsbiData, block_folds, load_isbi
from nerveseg.tasks.isbi2012.membrane_postprocess import MembranePostprocess, apply_membrane_postprocess
from nerveseg.tasks.isbi2012.postprocess import decide_isbi_postprocessing, postprocessed_v_rand_error
from nerveseg.tasks.isbi2012.summary import format_isbi_table, isbi_oof_summary
from nerveseg.train.fold_result import FoldResult

ISBI_SUBDIR = "isbi2012"


def isbi_root(raw_dir: Path) -> Path:
    """``raw_dir`` when it holds the ISBI layout itself, else ``raw_dir/isbi2012``."""
    raw_dir = Path(raw_dir)
    if any((raw_dir / name).exists() for name in TIFF_NAMES) or (raw_dir / "train" / "image").is_dir():
        return raw_dir
    return raw_dir / ISBI_SUBDIR


_RAW_KEY, _POST_KEY = f"oof_{V_RAND_ERROR}_raw", f"oof_{V_RAND_ERROR}"  # IsbiDecision.to_json's score keys
# files written before issue 23 hold skimage's adapted Rand error under these: read as "no score"
_OLD_SCORE_KEYS = ("oof_rand_error_raw", "oof_rand_error")


@dataclass(frozen=True)
class IsbiDecision:
    """The OOF-chosen threshold and clean-up, with the OOF V_rand error before (best of the sweep) and after
    (at the chosen threshold)."""

    settings: MembranePostprocess
    oof_v_rand_error_raw: float | None = None
    oof_v_rand_error: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {**self.settings.as_dict(), _RAW_KEY: self.oof_v_rand_error_raw, _POST_KEY: self.oof_v_rand_error}

    def params(self) -> dict[str, Any]:
        return self.settings.as_dict()

    def metrics(self) -> dict[str, float]:
        scores = {
            f"postprocessing_{_POST_KEY}": self.oof_v_rand_error,
            f"postprocessing_{_RAW_KEY}": self.oof_v_rand_error_raw,
        }
        return {key: float(value) for key, value in scores.items() if value is not None}

    def describe(self) -> str:
        scores = ""
        if self.oof_v_rand_error_raw is not None and self.oof_v_rand_error is not None:
            scores = f" (OOF V_rand error {self.oof_v_rand_error_raw:.4f} -> {self.oof_v_rand_error:.4f})"
        return f"{self.settings.describe()}{scores}"


def _slice_scores(data: IsbiData, folds: np.ndarray, pooled: ChallengeScores) -> ImageScores:
    """Each slice's V_rand error at the stack's best threshold of the challenge's sweep (``pooled``, the OOF stack's;
    the score the task ranks by), every slice its own subject: one volume has no patients to group by."""
    ids = np.asarray(data.ids).astype(str)
    return ImageScores(ids, ids, np.asarray(folds), pooled.v_rand_errors().astype(np.float64), _POST_KEY)


def _optional_float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class IsbiTask(SharedStages):
    """EM membranes: the challenge's V_rand / V_info errors, pixel error and skimage's adapted Rand error on
    block folds, a float32 TIFF stack submission."""

    name = "isbi2012"
    ranking_metric = f"cv_{V_RAND_ERROR}_mean"
    estimate_metric = ranking_metric  # no cross-fitted estimate is recorded: the fold mean ranks
    higher_is_better = False
    ranking_text = (
        "mean over the block folds of the challenge's V_rand error (after border thinning, best threshold "
        "of 0.0:0.1:1.0), minimised"
    )
    submission_suffix = ".tif"
    supports_test_masks = False

    def load_train(self, config: TrainConfig, raw_dir: Path, cache_dir: Path, *, progress: bool) -> IsbiData:
        """The slices under ``isbi_root(raw_dir)`` (small: read directly, ``cache_dir`` unused), checked
        against the config's size before any fold is set up."""
        root = isbi_root(raw_dir)
        data = load_isbi(root)
        if data.images.shape[1:] != (config.height, config.width):
            raise NervesegError(
                f"the ISBI slices in {root} are {data.images.shape[1:]} but config {config.name!r} says "
                f"height={config.height}, width={config.width}; set them to the slice size"
            )
        return data

    def data_fingerprint(self, raw_dir: Path, cache_dir: Path, *, progress: bool) -> str:
        """``load_train``'s fingerprint: the slices are few, read directly (no cache)."""
        return load_isbi(isbi_root(raw_dir)).fingerprint

    def make_folds(self, data: IsbiData, config: TrainConfig, folds_dir: Path) -> tuple[np.ndarray, Path]:
        from nerveseg.data.folds import load_or_create_folds

        return load_or_create_folds(
            data, config.folds, 0, folds_dir, assign=lambda: block_folds(len(data), config.folds)
        )

    def split_params(self, config: TrainConfig, data: IsbiData, folds: np.ndarray, fold: int) -> dict[str, str]:
        val = np.flatnonzero(folds == fold)
        n_train, n_val = str(len(folds) - len(val)), str(len(val))
        return {N_TRAIN_PARAM: n_train, N_VAL_PARAM: n_val, "val_slices": f"{val.min()}-{val.max()}"}

    def train_fold(self, config, data, folds, fold, workdir, *, callbacks, verbose) -> FoldResult:
        from nerveseg.tasks.isbi2012.trainer import train_isbi_fold

        return train_isbi_fold(config, data, folds, fold, workdir, callbacks=callbacks, verbose=verbose)

    def finalise(self, config, data, folds, results, *, progress, raw_dir, work) -> CVFinal:
        """The metrics per fold and over folds (pixel and adapted Rand error at 0.5, V_rand and V_info errors at
        the best threshold of the challenge's sweep), then the threshold and clean-up with the lowest OOF
        V_rand error (decided and scored on the same OOF: optimistic)."""
        metrics, oof, pooled = isbi_oof_summary(data, folds, results)
        settings = decide_isbi_postprocessing(oof, data.membranes)
        post = postprocessed_v_rand_error(oof, data.membranes, settings)
        decision = IsbiDecision(settings, metrics[_POST_KEY], post)
        metrics[f"{_POST_KEY}_postprocessed_insample"] = post
        table = format_isbi_table(metrics)
        table += f"\npost-processing chosen on OOF (in-sample, optimistic): {decision.describe()}"
        description = (
            f"**{config.name}** ({config.model}, task isbi2012): {config.folds} block folds of {len(data)} slices, "
            f"ranked by `{self.ranking_metric}` (lower is better).\n\n```\n{table}\n```\n"
        )
        facts = {"metrics": metrics, "model": config.model}
        return CVFinal(
            metrics, table, decision, data.ids, oof, None, facts, {}, description,
            image_scores=_slice_scores(data, folds, pooled),
        )  # fmt: skip

    def decision_from_json(self, values: Any, *, source: str) -> IsbiDecision:
        if not isinstance(values, dict):
            raise NervesegError(f"{source} must be a JSON object, got {type(values).__name__}")
        try:
            settings = MembranePostprocess.from_dict(
                {k: v for k, v in values.items() if k not in (_RAW_KEY, _POST_KEY, *_OLD_SCORE_KEYS)}
            )
        except (KeyError, TypeError, ValueError) as err:
            raise NervesegError(
                f"{source}: needs threshold and min_cell_area ({err}); delete it to decide again"
            ) from err
        return IsbiDecision(settings, _optional_float(values.get(_RAW_KEY)), _optional_float(values.get(_POST_KEY)))

    def decide_postprocessing(self, data, rows, oof_probs, oof_presence, *, progress) -> IsbiDecision:
        membranes = data.membranes[rows]
        settings = decide_isbi_postprocessing(oof_probs, membranes)
        return IsbiDecision(settings, None, postprocessed_v_rand_error(oof_probs, membranes, settings))

    def check_test_data(self, raw_dir: Path) -> None:
        root = isbi_root(raw_dir)
        if not root.is_dir():
            raise NervesegError(
                f"no ISBI 2012 data at {root}; put the TIFF stacks or PNG folders there or pass --raw-dir"
            )

    def submission_bytes(self, raw_dir: Path) -> int:
        """The float32 stack of ``test-volume.tif``'s pages, or of the ``test/*.png`` slices."""
        import tifffile

        from nerveseg.tasks.isbi2012.submission import expected_stack_bytes

        root = isbi_root(raw_dir)
        stack = root / "test-volume.tif"
        if not stack.is_file():
            return expected_stack_bytes(len(list((root / "test").glob("*.png"))))
        try:
            with tifffile.TiffFile(stack) as tif:
                return expected_stack_bytes(len(tif.pages), tuple(tif.pages.first.shape[:2]))
        except Exception as err:  # tifffile raises many types for a damaged file
            raise NervesegError(f"{stack}: cannot be read as a TIFF stack ({type(err).__name__}); replace it") from None

    served_columns = (ServedColumn(MEMBRANE_COLUMN, "binary"),)

    def served(self, runs, decision, *, tta, batch_size) -> Served:
        from nerveseg.tasks.isbi2012.serving import MembraneSegmenter

        return MembraneSegmenter(runs, decision, tta=tta)

    def write_submission(
        self, runs, decision, path, *, raw_dir, cache_dir, tta, batch_size, progress
    ) -> SubmissionFile:
        """The mean over runs of each run's fold ensemble (with TTA), cleaned up, as a new float32 stack,
        and each slice's thresholded membrane map as ``<stack stem>/<k>.png`` beside it."""
        from nerveseg.data.cache import fingerprint
        from nerveseg.tasks.isbi2012.membranes import predict_isbi_ensemble
        from nerveseg.tasks.isbi2012.submission import write_submission_stack

        seconds: dict[str, float] = {}
        mark = time.perf_counter()
        data = load_isbi(isbi_root(raw_dir))
        seconds["prepare_test"] = time.perf_counter() - mark
        mark = time.perf_counter()
        total = np.zeros(data.test_images.shape, np.float64)
        for run in runs:
            total += predict_isbi_ensemble(run.config, run.weights_paths, data.test_images, tta=tta)
        probs = np.clip(total / len(runs), 0.0, 1.0).astype(np.float32)
        seconds["predict"] = time.perf_counter() - mark
        mark = time.perf_counter()
        probs = apply_membrane_postprocess(probs, decision.settings)
        # an existing file is the user's one-line NervesegError; a stack failing its checks is a bug (traceback)
        # beside it, <stem>/<k>.png: each slice's thresholded membrane map
        written, _ = write_submission_stack(
            probs, path, threshold=decision.settings.threshold, shape=data.test_images.shape[1:]
        )
        seconds["write"] = time.perf_counter() - mark
        metrics = {
            N_TEST_IMAGES: float(len(probs)),
            "mean_membrane_probability": float(probs.mean()),
            "predicted_membrane_share": float((probs > decision.settings.threshold).mean()),
        }
        return SubmissionFile(written, len(probs), fingerprint(data.test_images), metrics, seconds)


TASK = IsbiTask()
