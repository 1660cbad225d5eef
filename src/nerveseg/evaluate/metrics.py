"""The competition metric, computed as Kaggle computes it.

Kaggle scores the mean over test images of Dice = 2|X∩Y| / (|X|+|Y|), with Dice = 1 when both
masks are empty, at the original 580x420 resolution. Scoring at the model's 64x80 instead, or
averaging Dice over batches instead of images, gives numbers that do not predict the leaderboard.
"""

from __future__ import annotations

import cv2
import numpy as np

from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH


def dice_per_image(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Dice of each image in a (N, H, W) batch of binary masks; 1.0 where both masks are empty."""
    if y_true.shape != y_pred.shape:
        raise ValueError(f"dice_per_image needs masks of one shape, got {y_true.shape} and {y_pred.shape}")
    if y_true.ndim == 2:
        y_true, y_pred = y_true[None], y_pred[None]
    truth = y_true.reshape(len(y_true), -1) != 0
    pred = y_pred.reshape(len(y_pred), -1) != 0
    intersection = np.count_nonzero(truth & pred, axis=1)
    total = np.count_nonzero(truth, axis=1) + np.count_nonzero(pred, axis=1)
    return dice_from_counts(intersection, total).astype(np.float64)


def dice_from_counts(intersection: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Dice from each image's overlap and its two areas' sum; 1.0 where both masks are empty (``total`` 0)."""
    return np.where(total == 0, 1.0, 2.0 * intersection / np.maximum(total, 1))


def competition_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean Dice over images: the leaderboard's number."""
    return float(dice_per_image(y_true, y_pred).mean())


def to_full_resolution(probs: np.ndarray, height: int = ORIG_HEIGHT, width: int = ORIG_WIDTH) -> np.ndarray:
    """Resize (N, h, w) probabilities to (N, 420, 580) before thresholding, as a submission must."""
    if probs.ndim == 4 and probs.shape[-1] == 1:
        probs = probs[..., 0]
    if probs.ndim != 3:
        raise ValueError(f"to_full_resolution takes (N, h, w) probabilities, got shape {probs.shape}")
    out = np.empty((len(probs), height, width), dtype=np.float32)
    for i, prob in enumerate(probs):
        out[i] = cv2.resize(prob.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return out


def resize_probabilities(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, h, w) probabilities at ``shape`` (height, width): ``probs`` itself when already there, so that
    ensembles of runs trained at one size cost no resize (runs at other sizes are brought to the first's)."""
    return probs if probs.shape[1:] == tuple(shape) else to_full_resolution(probs, height=shape[0], width=shape[1])
