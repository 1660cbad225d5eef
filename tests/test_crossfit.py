"""Cross-fitted post-processing: fold k is scored with settings that never saw fold k."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.evaluate.crossfit import crossfit_postprocessing
from nerveseg.evaluate.metrics import dice_per_image, to_full_resolution
from nerveseg.evaluate.postprocess import apply_postprocessing, decide_postprocessing

SMALL = (21, 29)  # model-size probabilities; scored at 420x580


def oof_set(seed: int = 0, n: int = 24):
    """Blobs of probability where a nerve is, some false blobs on empty images, and presence scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: SMALL[0], : SMALL[1]]
    probs = rng.uniform(0.0, 0.3, (n, *SMALL)).astype(np.float32)
    has = rng.random(n) < 0.5
    for i in range(n):
        cy, cx = rng.uniform(6, 15), rng.uniform(8, 21)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 4) ** 2))
        probs[i] = np.maximum(probs[i], blob * (0.95 if has[i] else rng.uniform(0.3, 0.8)))
    truth = (to_full_resolution(probs) > 0.55) & has[:, None, None]
    presence = np.clip(has + rng.normal(0, 0.35, n), 0, 1).astype(np.float32)
    folds = np.arange(n) % 3
    return probs, truth.astype(np.uint8), presence, folds


def test_each_fold_is_scored_with_settings_decided_on_the_others() -> None:
    probs, truth, presence, folds = oof_set()
    result = crossfit_postprocessing(probs, lambda index: truth[index], folds, presence)
    assert sorted(result.decisions_by_fold) == [0, 1, 2]
    for k in range(3):
        others, scored = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
        decision = decide_postprocessing(probs[others], truth[others], presence[others], progress=False)
        settings = decision.settings
        assert settings == result.decisions_by_fold[k].settings
        masks = apply_postprocessing(to_full_resolution(probs[scored]), settings, presence[scored])
        np.testing.assert_allclose(result.per_image[scored], dice_per_image(truth[scored], masks))
    assert result.score == pytest.approx(result.per_image.mean())


def test_changing_fold_k_never_changes_its_own_settings() -> None:
    probs, truth, presence, folds = oof_set(seed=1)
    before = crossfit_postprocessing(probs, lambda index: truth[index], folds, presence)
    changed = truth.copy()
    changed[folds == 0] = 1 - changed[folds == 0]  # fold 0's truth turned upside down
    after = crossfit_postprocessing(probs, lambda index: changed[index], folds, presence)
    assert before.decisions_by_fold[0].settings.threshold == after.decisions_by_fold[0].settings.threshold
    assert before.decisions_by_fold[0].settings.min_area == after.decisions_by_fold[0].settings.min_area
    assert before.decisions_by_fold[0].oof_score == after.decisions_by_fold[0].oof_score
    # ...while the folds that used fold 0 to decide see a different search
    assert before.decisions_by_fold[1].oof_score != after.decisions_by_fold[1].oof_score


def test_in_sample_is_at_least_the_cross_fitted_score() -> None:
    probs, truth, presence, folds = oof_set(seed=2, n=30)
    insample = decide_postprocessing(probs, truth, presence, progress=False).oof_score
    honest = crossfit_postprocessing(probs, lambda index: truth[index], folds, presence).score
    assert honest <= insample + 1e-12


def test_crossfit_needs_two_folds_and_aligned_folds() -> None:
    probs, truth, _, folds = oof_set(n=6)
    with pytest.raises(ValueError, match="at least 2 folds"):
        crossfit_postprocessing(probs, lambda index: truth[index], np.zeros(6, int))
    with pytest.raises(ValueError, match="one fold per image"):
        crossfit_postprocessing(probs, lambda index: truth[index], folds[:5])
