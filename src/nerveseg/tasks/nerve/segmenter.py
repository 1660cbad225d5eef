"""The nerve task's trained cross-validation as one object that segments images of any size: the one inference path.

``Segmenter`` holds the fold models of one or more CV runs (``inference.trained.TrainedModels``), the run's
post-processing decision and the TTA switch. ``submit`` (the Kaggle CSV), ``predict.py`` and the MLflow
pyfunc model (``track.model_package``) all predict through it, so a mask served over HTTP is the mask in
the submission. Images are resized to the model input the way the training cache does
(``data.cache.resize_image``), the fold x mirror ensemble is ``inference.ensemble.predict_ensemble``, and
the post-processing is applied at 580x420 (where it was decided; ``min_area`` is in those pixels) with
``evaluate.postprocess.iter_postprocessed``; the mask is then brought to the input's own size.

``Segmenter.answer`` is the served model's answer (the nerve task's ``Served``); the ISBI 2012 counterpart, a
membrane probability map per image, is ``tasks.isbi2012.serving``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import pandas as pd

from nerveseg import names
from nerveseg.data.cache import resize_image
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import resize_probabilities
from nerveseg.evaluate.postprocess import iter_postprocessed
from nerveseg.evaluate.postprocess_settings import PostprocessDecision
from nerveseg.inference.ensemble import load_fold_models, predict_ensemble
from nerveseg.inference.images import Shape, encode_mask_png, gray_images
from nerveseg.inference.trained import TrainedModels, check_runs
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH
from nerveseg.submit.rle import rle_encode


@dataclass(frozen=True)
class Segmentation:
    """One image's result at its own size.

    ``probability`` is the presence head's mean over the ensemble when the models have one, else the
    highest pixel probability of the mean map (the mask is non-empty at threshold t only if it exceeds t).
    ``rle`` is Kaggle's column-major run-length encoding of ``mask`` (Kaggle's own format at 580x420).
    """

    present: bool
    probability: float
    area: int
    rle: str
    mask: np.ndarray | None = None  # uint8 0/1 (h, w), only when asked for


class Segmenter:
    """The nerve task's fold ensemble(s) plus post-processing, for uint8 images of any size (gray or RGB).

    Several runs are averaged with equal weight at the first run's input size (``submit.py --runs``).
    Predictions are float32: bfloat16 was measured (``benchmarks/serve_throughput.py``) and not offered.
    """

    def __init__(
        self,
        runs: Sequence[TrainedModels],
        decision: PostprocessDecision,
        *,
        tta: bool = True,
        batch_size: int = 32,
    ) -> None:
        check_runs(runs, "nerve")
        if batch_size < 1:
            raise NervesegError(f"batch_size={batch_size} must be >= 1")
        self.runs = list(runs)
        self.decision = decision
        self.tta = tta
        self.batch_size = batch_size
        self._models = [load_fold_models(run.config, run.weights_paths) for run in self.runs]

    @property
    def input_shape(self) -> Shape:
        """(height, width) of the first run's models: where the runs' probabilities are averaged."""
        return self.runs[0].config.height, self.runs[0].config.width

    @property
    def input_shapes(self) -> list[Shape]:
        """Each distinct model input size, first run's first."""
        return list(dict.fromkeys((run.config.height, run.config.width) for run in self.runs))

    @property
    def fold_models(self) -> list[list[Any]]:
        """Each run's Keras fold models (what ``inference.ensemble.predict_ensemble`` takes)."""
        return self._models

    @property
    def n_forward_passes(self) -> int:
        """Forward passes per image: folds x views (2 with TTA)."""
        return sum(len(models) for models in self._models) * (2 if self.tta else 1)

    def model_inputs(self, gray: Sequence[np.ndarray]) -> dict[Shape, np.ndarray]:
        """The gray images resized (INTER_AREA, as the training cache) to every run's input size."""
        return {shape: np.stack([resize_image(image, *shape) for image in gray]) for shape in self.input_shapes}

    def ensemble(
        self, inputs: Mapping[Shape, np.ndarray], *, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean mask probabilities (N, h, w) at ``input_shape`` and mean presence (N,) or None.

        ``inputs`` holds the same N images at each run's input size (``model_inputs``, or the test cache).
        """
        shape = self.input_shape
        probs = np.zeros((len(inputs[shape]), *shape), np.float32)
        presences = []
        for run, models in zip(self.runs, self._models, strict=True):
            images = inputs[(run.config.height, run.config.width)]
            run_probs, run_presence = predict_ensemble(
                models, images, tta=self.tta, batch_size=self.batch_size, progress=progress
            )
            probs += resize_probabilities(run_probs, shape)
            presences.append(run_presence)
        presence = None if any(p is None for p in presences) else np.mean(presences, axis=0)
        return probs / len(self.runs), presence

    def segment(self, images: Sequence[np.ndarray] | np.ndarray, *, masks: bool = False) -> list[Segmentation]:
        """Post-processed masks of ``images`` (uint8, any size, gray or RGB) at their own size, per image."""
        gray = gray_images(images)
        probs, presence = self.ensemble(self.model_inputs(gray))
        scores = presence if presence is not None else probs.reshape(len(probs), -1).max(axis=1)
        results = []
        for start, chunk in iter_postprocessed(probs, self.decision.settings, presence):
            for offset, full in enumerate(chunk):
                index = start + offset
                mask = _to_size(full, gray[index].shape)
                area = int(np.count_nonzero(mask))
                results.append(
                    Segmentation(area > 0, float(scores[index]), area, rle_encode(mask), mask if masks else None)
                )
        return results

    def answer(self, images: list[np.ndarray], *, return_mask: bool) -> pd.DataFrame:
        """The served model's answer (``segmentations_frame``): the nerve task's ``Served``."""
        return segmentations_frame(self.segment(images, masks=return_mask), return_mask)


def segmentations_frame(results: Sequence[Segmentation], with_masks: bool) -> pd.DataFrame:
    """The output columns from ``Segmenter.segment``'s results (``mask_png`` only ``with_masks``)."""
    frame = pd.DataFrame(
        {
            names.PRESENT_COLUMN: [r.present for r in results],
            names.PROBABILITY_COLUMN: [r.probability for r in results],
            names.AREA_COLUMN: [r.area for r in results],
            names.RLE_COLUMN: [r.rle for r in results],
        }
    )
    if with_masks:
        frame[names.MASK_COLUMN] = [encode_mask_png(r.mask) for r in results]
    return frame


def _to_size(mask: np.ndarray, shape: Shape) -> np.ndarray:
    """A 580x420 mask at ``shape`` (nearest neighbour; itself when already there)."""
    if tuple(shape) == (ORIG_HEIGHT, ORIG_WIDTH):
        return mask
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


__all__ = ["Segmentation", "Segmenter", "segmentations_frame"]
