"""The toy task (``task: toy``): bright blobs on noise, to show what adding a task takes (issue 31).

What only it knows is here: its data and IoU (``blobs``), its post-processing (a threshold) and its submission (a
CSV of one run-length-encoded mask per test image, ``id,rle_mask``, at the image's own size). The rest is the
generic stages: subject-grouped folds (each image its own subject), the whole-image fold (``train.fold.image_fold``)
with the U-Net any task gets (``model.families.ANY_TASK``), the fold ensemble of ``inference.ensemble``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.data.cache import PreparedData, fingerprint, resize_mask
from nerveseg.errors import NervesegError
from nerveseg.evaluate.paired import ImageScores
from nerveseg.io_utils import atomic_create_text
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH
from nerveseg.report.markdown import aligned_columns
from nerveseg.submit.rle import rle_decode, rle_encode
from nerveseg.tasks.base import CVFinal, Served, ServedColumn, SharedStages, SubmissionFile
from nerveseg.tasks.toy.blobs import TEST, TRAIN, iou_per_image, read_blobs
from nerveseg.train.fold_result import FoldResult

RANKING, OOF_IOU = "cv_iou_mean", "oof_iou"  # IoU at threshold 0.5: the fold mean ranks, the pooled OOF per image
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # what the post-processing chooses from


@dataclass(frozen=True)
class ToyDecision:
    """The threshold chosen on out-of-fold probabilities, with the OOF IoU it gave there."""

    threshold: float = 0.5
    oof_iou: float | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def metrics(self) -> dict[str, float]:
        return {} if self.oof_iou is None else {f"postprocessing_{OOF_IOU}": self.oof_iou}

    def describe(self) -> str:
        return f"threshold {self.threshold}" + ("" if self.oof_iou is None else f" (OOF IoU {self.oof_iou:.4f})")


def prepared(images: np.ndarray, masks: np.ndarray) -> PreparedData:
    """The arrays as the whole-image fold takes them, each image its own subject, with the masks at 580x420 that
    ``PreparedData`` holds (a nerve-ism: the audit behind ``drop_contradictory`` reads their areas)."""
    full = np.stack([resize_mask(mask, ORIG_HEIGHT, ORIG_WIDTH) for mask in masks]).reshape(len(masks), -1)
    ids = np.arange(len(images))
    return PreparedData(ids.astype(str), ids, images, masks, np.packbits(full, axis=1), fingerprint(images, masks))


def fold_iou(data: PreparedData, rows: np.ndarray, probs: np.ndarray) -> float:
    """A fold's score: the mean IoU at threshold 0.5 of its out-of-fold probabilities."""
    return float(iou_per_image(data.masks[rows], probs > 0.5).mean())


class ToyTask(SharedStages):
    """IoU of bright blobs on noise, subject-grouped folds, a CSV of run-length-encoded masks."""

    name = "toy"
    ranking_metric = estimate_metric = RANKING
    higher_is_better = True
    ranking_text = "mean over the cross-validation folds of the IoU per image at threshold 0.5, maximised"
    submission_suffix = ".csv"
    supports_test_masks = False

    def load_train(self, config: TrainConfig, raw_dir: Path, cache_dir: Path, *, progress: bool) -> PreparedData:
        path = Path(raw_dir) / TRAIN
        images, masks = read_blobs(path, "images", "masks")
        if images.shape[1:] != (config.height, config.width):
            raise NervesegError(
                f"the toy images in {path} are {images.shape[1:]} but config {config.name!r} says "
                f"height={config.height}, width={config.width}; set them to the image size"
            )
        return prepared(images, masks)

    def data_fingerprint(self, raw_dir: Path, cache_dir: Path, *, progress: bool) -> str:
        return fingerprint(*read_blobs(Path(raw_dir) / TRAIN, "images", "masks"))

    def split_params(self, config: TrainConfig, data: PreparedData, folds: np.ndarray, fold: int) -> dict[str, str]:
        from nerveseg.train.fold import fold_indices

        val_index, train_index, _ = fold_indices(config, data, folds, fold)
        return {names.N_TRAIN_PARAM: str(len(train_index)), names.N_VAL_PARAM: str(len(val_index))}

    def train_fold(self, config, data, folds, fold, workdir, *, callbacks, verbose) -> FoldResult:
        """The whole-image fold (``train.fold.image_fold``), scored by the IoU at 0.5 of its out-of-fold predictions."""
        from nerveseg.train.fold import image_fold, run_fold

        return run_fold(image_fold(fold_iou), config, data, folds, fold, workdir, callbacks=callbacks, verbose=verbose)

    def finalise(self, config, data, folds, results, *, progress, raw_dir, work) -> CVFinal:
        """IoU at 0.5 per fold, pooled and of all-empty masks; the threshold chosen on all OOF (in-sample)."""
        oof = np.zeros(data.masks.shape, np.float32)
        for result in results:
            oof[result.val_index] = result.oof_probs
        scores = iou_per_image(data.masks, oof > 0.5)
        per_fold = [float(scores[folds == k].mean()) for k in range(config.folds)]
        decision = self.decide_postprocessing(data, np.arange(len(data)), oof, None, progress=progress)
        metrics = {
            RANKING: float(np.mean(per_fold)),
            "cv_iou_std": float(np.std(per_fold)),
            OOF_IOU: float(scores.mean()),
            "empty_iou": float(iou_per_image(data.masks, np.zeros_like(data.masks)).mean()),
            **{f"fold_{k}_iou": score for k, score in enumerate(per_fold)},
        }
        rows = [["fold", "IoU"], *([str(k), f"{score:.4f}"] for k, score in enumerate(per_fold))]
        rows += [["mean ± std", f"{metrics[RANKING]:.4f} ± {metrics['cv_iou_std']:.4f}"]]
        rows += [["OOF", f"{metrics[OOF_IOU]:.4f}"], ["all-empty", f"{metrics['empty_iou']:.4f}"]]
        table = "\n".join(aligned_columns(rows)) + f"\npost-processing chosen on OOF (in-sample): {decision.describe()}"
        description = f"**{config.name}** (task toy), ranked by `{RANKING}`:\n\n```\n{table}\n```\n"
        image_scores = ImageScores(data.ids, data.ids, folds, scores, OOF_IOU)
        return CVFinal(metrics, table, decision, data.ids, oof, description=description, image_scores=image_scores)

    def decision_from_json(self, values: Any, *, source: str) -> ToyDecision:
        threshold = values.get("threshold") if isinstance(values, dict) else None
        if not isinstance(threshold, int | float) or isinstance(threshold, bool) or not 0 <= threshold <= 1:
            raise NervesegError(f"{source} needs a threshold between 0 and 1; delete it to decide again")
        oof_iou = values.get(OOF_IOU)
        return ToyDecision(float(threshold), float(oof_iou) if isinstance(oof_iou, int | float) else None)

    def decide_postprocessing(self, data, rows, oof_probs, oof_presence, *, progress) -> ToyDecision:
        scores = [float(iou_per_image(data.masks[rows], oof_probs > t).mean()) for t in THRESHOLDS]
        return ToyDecision(THRESHOLDS[int(np.argmax(scores))], max(scores))

    def check_test_data(self, raw_dir: Path) -> None:
        if not (Path(raw_dir) / TEST).is_file():
            raise NervesegError(f"no {Path(raw_dir) / TEST}; write the toy data with tasks.toy.blobs.write_blobs")

    def submission_bytes(self, raw_dir: Path) -> int:
        """The test file's own size: an RLE row is shorter than the image it encodes."""
        test = Path(raw_dir) / TEST
        return test.stat().st_size if test.is_file() else 0

    served_columns: tuple[ServedColumn, ...] = ()

    def served(self, runs, decision, *, tta, batch_size) -> Served:
        raise NervesegError("the toy task has no served model; submit.py writes its predictions")

    def write_submission(
        self, runs, decision, path, *, raw_dir, cache_dir, tta, batch_size, progress
    ) -> SubmissionFile:
        """Every run's fold ensemble averaged, thresholded, one RLE row per test image; the file is read back."""
        from nerveseg.inference.ensemble import load_fold_models, predict_ensemble

        started = time.perf_counter()
        (images,) = read_blobs(Path(raw_dir) / TEST, "images")
        models = [load_fold_models(run.config, run.weights_paths) for run in runs]
        probs = [predict_ensemble(m, images, tta=tta, batch_size=batch_size, progress=progress)[0] for m in models]
        masks = np.mean(probs, axis=0) > decision.threshold
        atomic_create_text(path, "id,rle_mask\n" + "".join(f"{k},{rle_encode(m)}\n" for k, m in enumerate(masks)))
        rows = [line.split(",") for line in Path(path).read_text().splitlines()[1:]]
        decoded = np.array([rle_decode(rle, masks.shape[1:]) for _, rle in rows], bool)
        if [k for k, _ in rows] != [str(k) for k in range(len(masks))] or not np.array_equal(decoded, masks):
            raise RuntimeError(f"{path} does not read back as the masks written")
        empty = float(np.mean(~masks.any(axis=(1, 2))))
        metrics = {names.N_TEST_IMAGES: float(len(masks)), names.PREDICTED_EMPTY_SHARE: empty}
        seconds = {"predict_and_write": time.perf_counter() - started}
        return SubmissionFile(Path(path), len(masks), fingerprint(images), metrics, seconds, np.arange(len(masks)))


TASK = ToyTask()
