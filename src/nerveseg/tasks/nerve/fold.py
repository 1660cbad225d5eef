"""The nerve task's fold: ``train.fold``'s whole-image fold, scored by Kaggle's metric, the Dice at 580x420.

The score is recomputed at the competition's resolution from the model's 64x80 probabilities, so a fold's
``val_score`` is the number runs are compared by; the CV summary (``tasks.nerve.summary``) and the report use the
same ``full_resolution_dice``.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from nerveseg.data.cache import PreparedData
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import dice_per_image, to_full_resolution
from nerveseg.train.fold import image_fold, run_fold


def full_resolution_dice(
    data: PreparedData, index: np.ndarray, probs: np.ndarray, threshold: float = 0.5, chunk_size: int = 256
) -> np.ndarray:
    """(n,) Dice per image at 580x420 of ``probs > threshold`` against ``data.full_masks(index)``.

    Chunked because 256 full-resolution masks already take 62 MB.
    """
    if len(index) != len(probs):
        raise NervesegError(f"got {len(probs)} probability maps for {len(index)} images")
    scores = np.empty(len(index), dtype=np.float64)
    for start in range(0, len(index), chunk_size):
        part = slice(start, start + chunk_size)
        predicted = to_full_resolution(probs[part]) > threshold
        scores[part] = dice_per_image(data.full_masks(index[part]), predicted)
    return scores


def _nerve_score(data: PreparedData, index: np.ndarray, probs: np.ndarray) -> float:
    """The nerve fold's score: the mean Dice at 580x420 of ``probs > 0.5`` (Kaggle's metric)."""
    return float(full_resolution_dice(data, index, probs).mean())


NERVE_FOLD = image_fold(_nerve_score)


# ``run_fold`` with ``NERVE_FOLD``: whole images, kept by ``config.checkpoint``, scored by the Dice at 580x420
train_fold = partial(run_fold, NERVE_FOLD)
