"""What one trained fold leaves behind, as plain arrays: importing it loads no TensorFlow.

The stores (``run.fold_files``) read and write it; ``train.fold`` and ``tasks.isbi2012.trainer`` make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerveseg.config import CheckpointRule


@dataclass
class FoldResult:
    """What one fold leaves behind; ``kept_epoch`` is 1-based (``history[k][kept_epoch - 1]``).

    ``history``'s ``val_*`` values are on the scored fold, except with ``checkpoint="inner"``,
    where they are on the inner split that chose the epoch.
    """

    fold: int
    val_index: np.ndarray  # positions in the PreparedData of the held-out images
    oof_probs: np.ndarray  # (n, h, w) float32
    oof_presence: np.ndarray | None  # (n,) float32 when the model has a presence head
    history: dict[str, list[float]]  # exactly HISTORY_KEYS, one value per epoch
    kept_epoch: int  # the epoch whose weights were kept, chosen by ``checkpoint``
    weights_path: Path
    val_score: float  # competition score at 580x420, threshold 0.5
    norm_mean: float
    norm_std: float
    checkpoint: CheckpointRule = "best_val"  # "best_val" chose kept_epoch on the scored fold: optimistic
