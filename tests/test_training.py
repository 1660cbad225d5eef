"""One fold end to end on a tiny in-memory data set, and the CV summary built from fold results."""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

import nerveseg.model.losses
import nerveseg.train.fold
from helpers import random_disc_masks
from nerveseg import names
from nerveseg.data.cache import PreparedData
from nerveseg.evaluate.metrics import dice_per_image
from nerveseg.inference.ensemble import predict_ensemble, predict_probs
from nerveseg.model.unet import build_model_from_config, get_standardization
from nerveseg.paths import ORIG_HEIGHT, ORIG_WIDTH
from nerveseg.tasks.nerve.fold import train_fold
from nerveseg.tasks.nerve.summary import (
    CVSummary,
    default_predict_subjects,
    format_summary_table,
    interval_metrics,
    summarize_cv,
)
from nerveseg.train.fold import (
    HISTORY_KEYS,
    FoldResult,
    GatedValDice,
    TrainingDivergedError,
    standardization_stats,
    training_index,
)


def make_data(
    subjects: int = 6, per_subject: int = 6, height: int = 32, width: int = 40, seed: int = 0
) -> PreparedData:
    """Dark noisy images with a bright disc where the mask is; every third image is empty."""
    rng = np.random.default_rng(seed)
    n = subjects * per_subject
    masks = random_disc_masks(rng, n, height, width, max_radius=7)
    images = np.clip(rng.normal(60, 20, (n, height, width)) + 120 * masks, 0, 255).astype(np.uint8)
    full = np.stack([cv2.resize(m, (ORIG_WIDTH, ORIG_HEIGHT), interpolation=cv2.INTER_NEAREST) for m in masks])
    return PreparedData(
        ids=np.array([f"{i // per_subject + 1}_{i % per_subject + 1}" for i in range(n)]),
        subjects=np.repeat(np.arange(1, subjects + 1), per_subject),
        images=images,
        masks=masks,
        masks_full_packed=np.packbits(full.reshape(n, -1), axis=1),
        fingerprint="test",
    )


def make_folds(data: PreparedData, n_folds: int = 3) -> np.ndarray:
    return (data.subjects - 1) % n_folds


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return make_data()


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    from nerveseg.config import TrainConfig

    config = TrainConfig(
        name="tiny", height=32, width=40, depth=3, base_filters=4, learning_rate=1e-3, batch_size=8,
        epochs=2, folds=3, seed=1, augment_strength=1.0, augment_flip=True, presence_head=True, lr_schedule="cosine",
        checkpoint="best_val",
    )  # fmt: skip
    workdir = tmp_path_factory.mktemp("fold")
    return config, train_fold(config, data, make_folds(data), 1, workdir, verbose=0)


@pytest.mark.slow
def test_train_fold_result(trained, data) -> None:
    config, result = trained
    folds = make_folds(data)
    assert list(result.history) == list(HISTORY_KEYS)
    assert all(len(values) == config.epochs for values in result.history.values())
    assert result.history["learning_rate"][0] == pytest.approx(config.learning_rate)
    assert result.history["learning_rate"][1] < config.learning_rate  # cosine decay
    assert 1 <= result.kept_epoch <= config.epochs
    assert result.history["val_dice"][result.kept_epoch - 1] == max(result.history["val_dice"])
    np.testing.assert_array_equal(result.val_index, np.flatnonzero(folds == 1))
    assert result.oof_probs.shape == (len(result.val_index), 32, 40)
    assert result.oof_presence is not None and result.oof_presence.shape == (len(result.val_index),)
    train_images = data.images[folds != 1].astype(np.float64) / 255
    assert (result.norm_mean, result.norm_std) == pytest.approx((train_images.mean(), train_images.std()))
    truth = data.full_masks(result.val_index)
    pred = np.stack([cv2.resize(p, (ORIG_WIDTH, ORIG_HEIGHT)) > 0.5 for p in result.oof_probs])
    assert result.val_score == pytest.approx(dice_per_image(truth, pred).mean())
    assert not list(result.weights_path.parent.glob("*partial*"))


@pytest.mark.slow
def test_saved_weights_reproduce_the_predictions(trained, data) -> None:
    config, result = trained
    model = build_model_from_config(config)
    model.load_weights(result.weights_path)
    assert get_standardization(model) == pytest.approx((result.norm_mean, result.norm_std))
    images = data.images[result.val_index]
    probs, _ = predict_probs(model, images)
    # the restored model is the kept epoch's, and validation saw every held-out image exactly once
    model_size_dice = dice_per_image(data.masks[result.val_index], probs > 0.5).mean()
    assert result.history["val_dice"][result.kept_epoch - 1] == pytest.approx(model_size_dice, abs=1e-6)
    probs_float, _ = predict_probs(model, images / np.float32(255), batch_size=5)
    np.testing.assert_allclose(probs_float, probs, atol=1e-5)


@pytest.mark.slow
def test_oof_predictions_use_the_submissions_views(trained, data) -> None:
    """Out-of-fold probabilities are the submission's identity + flip mean, not the plain view (config.tta)."""
    config, result = trained
    assert config.tta
    model = build_model_from_config(config)
    model.load_weights(result.weights_path)
    images = data.images[result.val_index]
    shipped, shipped_presence = predict_ensemble([model], images, tta=True, progress=False)
    np.testing.assert_allclose(result.oof_probs, shipped, atol=1e-6)
    np.testing.assert_allclose(result.oof_presence, shipped_presence, atol=1e-6)
    plain, _ = predict_probs(model, images)
    assert not np.allclose(result.oof_probs, plain, atol=1e-4)  # the flip view does change the prediction


@pytest.mark.slow
def test_nan_loss_raises_and_leaves_no_weights(data, tiny_config, tmp_path, monkeypatch) -> None:
    def nan_loss(name, smooth):
        return lambda y_true, y_pred: keras.ops.mean(y_pred, axis=(1, 2, 3)) * np.nan

    monkeypatch.setattr(nerveseg.model.losses, "mask_loss", nan_loss)
    with pytest.raises(TrainingDivergedError, match=r"(?i)nan"):
        train_fold(tiny_config.replace(epochs=1, depth=2), data, make_folds(data), 0, tmp_path, verbose=0)
    assert not list(tmp_path.glob("*.h5"))


class Prune(Exception):
    pass


class RecordThenPrune(keras.callbacks.Callback):
    """What a tracking/pruning callback sees; raises like a pruned Optuna trial."""

    def on_epoch_end(self, epoch, logs=None):
        self.keys = set(logs)
        raise Prune


@pytest.mark.slow
def test_extra_callbacks_see_stable_names_and_may_stop_the_fold(data, tiny_config, tmp_path) -> None:
    recorder = RecordThenPrune()
    config = tiny_config.replace(presence_head=True, depth=2)
    with pytest.raises(Prune):
        train_fold(config, data, make_folds(data), 0, tmp_path, callbacks=[recorder], verbose=0)
    assert set(HISTORY_KEYS) <= recorder.keys
    assert names.VAL_DICE_GATED in recorder.keys  # a presence head: the curve of the model as it ships too
    assert not {"mask_dice", "val_mask_dice"} & recorder.keys
    assert not list(tmp_path.glob("*.h5"))


@pytest.mark.slow
def test_the_gated_val_dice_empties_the_frames_the_presence_head_calls_empty(trained, data) -> None:
    """val_dice_gated scores what ships: the mask where the presence head says nerve, nothing elsewhere."""
    config, result = trained
    model = build_model_from_config(config)
    model.load_weights(result.weights_path)
    images, masks = data.images[result.val_index], data.masks[result.val_index]
    gate, logs = GatedValDice(images, masks), {}
    gate.set_model(model)
    gate.on_epoch_end(0, logs)
    probs, presence = predict_ensemble([model], images, tta=False, progress=False)
    shipped = (probs > 0.5) & (presence > 0.5)[:, None, None]
    assert logs[names.VAL_DICE_GATED] == pytest.approx(dice_per_image(masks > 0.5, shipped).mean())


@pytest.mark.slow
def test_plateau_schedule_without_presence_logs_the_same_keys(data, tiny_config, tmp_path) -> None:
    config = tiny_config.replace(epochs=1, lr_schedule="plateau", depth=2)
    result = train_fold(config, data, make_folds(data), 2, tmp_path, verbose=0)
    assert list(result.history) == list(HISTORY_KEYS)
    assert result.oof_presence is None
    assert result.weights_path == tmp_path / "fold_2.weights.h5" and result.weights_path.is_file()


def test_contradictory_ids_leave_training_only(data, monkeypatch) -> None:
    folds = make_folds(data)
    monkeypatch.setattr(nerveseg.train.fold, "contradictory_ids", lambda d: {"1_1", "2_3"})  # subjects 1 and 2
    kept = training_index(data, folds, 0, drop_contradictory=True)
    assert set(data.ids[kept]) == set(data.ids[folds != 0]) - {"2_3"}  # 1_1 is in fold 0: validation keeps it
    np.testing.assert_array_equal(training_index(data, folds, 0, drop_contradictory=False), np.flatnonzero(folds != 0))


def test_bad_fold_or_size_raises(data, tiny_config, tmp_path) -> None:
    with pytest.raises(ValueError, match="fold=7"):
        train_fold(tiny_config, data, make_folds(data), 7, tmp_path)
    with pytest.raises(ValueError, match="height"):
        train_fold(tiny_config.replace(height=64, width=80), data, make_folds(data), 0, tmp_path)


def test_standardization_stats_are_exact() -> None:
    images = np.random.default_rng(1).integers(0, 256, (5, 7, 9), dtype=np.uint8)
    assert standardization_stats(images) == pytest.approx((images.mean() / 255, images.std() / 255))


def fake_results(data: PreparedData, folds: np.ndarray, probs: np.ndarray) -> list[FoldResult]:
    return [
        FoldResult(fold=k, val_index=np.flatnonzero(folds == k), oof_probs=probs[folds == k], oof_presence=None,
                   history={}, kept_epoch=1, weights_path=None, val_score=0.0, norm_mean=0.0, norm_std=1.0)
        for k in np.unique(folds)
    ]  # fmt: skip


def test_summarize_cv_scores_and_baseline(data) -> None:
    folds = make_folds(data)
    empty_share = float(np.mean(~data.has_mask))
    summary, oof = summarize_cv(data, folds, fake_results(data, folds, np.zeros(data.masks.shape, np.float32)))
    assert isinstance(summary, CVSummary)
    assert summary.empty_baseline_score == pytest.approx(empty_share)
    assert summary.oof_score == pytest.approx(empty_share)  # predicting nothing IS the baseline

    perfect = data.masks.astype(np.float32)
    summary, oof = summarize_cv(data, folds, fake_results(data, folds, perfect))
    np.testing.assert_array_equal(oof, perfect)
    assert summary.oof_score > 0.95 and summary.empty_baseline_score == pytest.approx(empty_share)
    assert set(summary.fold_scores) == {0, 1, 2}
    assert summary.cv_score_mean == pytest.approx(np.mean(list(summary.fold_scores.values())))
    assert summary.cv_score_std == pytest.approx(np.std(list(summary.fold_scores.values())))
    table = format_summary_table(summary)
    assert "OOF" in table and "all-empty" in table and f"{summary.oof_score:.4f}" in table


def test_summarize_cv_partial_and_invalid(data) -> None:
    folds = make_folds(data)
    results = fake_results(data, folds, data.masks.astype(np.float32))
    summary, oof = summarize_cv(data, folds, results[1:2])
    assert list(summary.fold_scores) == [1] and summary.oof_score == summary.fold_scores[1]
    assert np.isnan(oof[folds == 0]).all() and not np.isnan(oof[folds == 1]).any()
    with pytest.raises(ValueError, match="twice"):
        summarize_cv(data, folds, [results[0], results[0]])
    with pytest.raises(ValueError, match="val_index"):
        summarize_cv(data, (folds + 1) % 3, results)


def test_summary_has_intervals_crossfit_and_says_when_it_is_optimistic(data) -> None:
    folds = make_folds(data)
    rng = np.random.default_rng(0)
    noisy = np.clip(data.masks * 0.8 + rng.uniform(0, 0.45, data.masks.shape), 0, 1).astype(np.float32)
    results = fake_results(data, folds, noisy)
    summary, _ = summarize_cv(data, folds, results)
    assert summary.checkpoint == "best_val" and summary.optimistic  # FoldResult's default rule
    assert summary.n_subjects == len(np.unique(data.subjects))
    assert summary.cv_score_ci_low <= summary.oof_score <= summary.cv_score_ci_high
    assert summary.empty_baseline_ci_low <= summary.empty_baseline_score <= summary.empty_baseline_ci_high
    assert summary.oof_score_postprocessed is not None
    assert summary.oof_score_postprocessed_ci_low <= summary.oof_score_postprocessed
    assert summary.oof_score_postprocessed <= summary.oof_score_postprocessed_ci_high
    table = format_summary_table(summary)
    assert "OPTIMISTIC" in table and "95 % CI" in table and "cross-fitted" in table
    assert {"cv_score_ci_low", "cv_score_ci_high", "oof_score_postprocessed"} <= set(interval_metrics(summary))
    assert summary.oof_score_postprocessed_pi_low <= summary.oof_score_postprocessed_ci_low  # the PI is wider
    assert summary.oof_score_postprocessed_pi_high >= summary.oof_score_postprocessed_ci_high
    assert summary.predict_subjects == default_predict_subjects(summary.n_subjects, len(results))
    assert "95 % PI" in table and f"{summary.predict_subjects} new subject" in table
    metrics = interval_metrics(summary)
    assert metrics[names.PI_SUBJECTS] == summary.predict_subjects
    assert metrics[names.OOF_SCORE_POSTPROCESSED_PI_LOW] == summary.oof_score_postprocessed_pi_low
    wide, _ = summarize_cv(data, folds, results, predict_subjects=1)
    narrow, _ = summarize_cv(data, folds, results, predict_subjects=1000)
    assert wide.predict_subjects == 1 and narrow.predict_subjects == 1000
    assert (wide.oof_score_postprocessed_pi_high - wide.oof_score_postprocessed_pi_low) > (
        narrow.oof_score_postprocessed_pi_high - narrow.oof_score_postprocessed_pi_low
    )

    for result in results:
        result.checkpoint = "last"
    honest, _ = summarize_cv(data, folds, results, crossfit=False)
    assert honest.checkpoint == "last" and not honest.optimistic
    assert honest.oof_score_postprocessed is None
    assert "OPTIMISTIC" not in format_summary_table(honest) and "checkpoint: last" in format_summary_table(honest)
    results[0].checkpoint = "best_val"
    assert summarize_cv(data, folds, results, crossfit=False)[0].optimistic  # "mixed"


def test_assemble_presence_puts_each_folds_outputs_in_image_order() -> None:
    from nerveseg.tasks.nerve.summary import assemble_presence

    def result(fold: int, index: list[int], presence: list[float] | None) -> FoldResult:
        probs = np.zeros((len(index), 4, 4), np.float32)
        none = None if presence is None else np.asarray(presence, np.float32)
        return FoldResult(fold, np.asarray(index), probs, none, {}, 1, Path("w"), 0.0, 0.0, 1.0)

    both = [result(0, [0, 2], [0.1, 0.3]), result(1, [1, 3], [0.2, 0.4])]
    np.testing.assert_allclose(assemble_presence(4, both), [0.1, 0.2, 0.3, 0.4])
    assert assemble_presence(4, [both[0], result(1, [1, 3], None)]) is None  # one fold without the head


def test_a_fold_runs_params_count_the_rows_train_fold_uses(data, tiny_config) -> None:
    from nerveseg.tasks.nerve import NerveTask
    from nerveseg.train.fold import fold_indices

    folds = make_folds(data)
    for checkpoint in ("last", "inner"):
        config = tiny_config.replace(checkpoint=checkpoint, inner_val_fraction=0.3)
        val_index, train_index, monitor_index = fold_indices(config, data, folds, 1)
        params = NerveTask().split_params(config, data, folds, 1)
        assert params["n_train"] == str(len(train_index)) and params["n_val"] == str(len(val_index))
        assert params.get("n_inner_val") == (str(len(monitor_index)) if checkpoint == "inner" else None)
        assert set(params["val_subjects"].split(",")) == {str(s) for s in np.unique(data.subjects[val_index])}
    assert len(monitor_index) > 0 and not set(monitor_index) & set(train_index)


def test_an_ensemble_gain_probe_centres_the_pi_on_the_ensembles_expected_score(data) -> None:
    from nerveseg.tasks.nerve.summary import EnsembleGain

    folds = make_folds(data)
    rng = np.random.default_rng(3)

    def noisy(seed_rng: np.random.Generator) -> np.ndarray:
        return np.clip(data.masks * 0.6 + seed_rng.uniform(0, 0.7, data.masks.shape), 0, 1).astype(np.float32)

    results = fake_results(data, folds, noisy(rng))
    plain, _ = summarize_cv(data, folds, results)
    assert plain.ensemble_gain is None and names.ENSEMBLE_GAIN not in interval_metrics(plain)
    assert "ensemble " not in format_summary_table(plain)

    twin, _ = summarize_cv(data, folds, results, probe=results[0])  # a probe that predicts as its fold: no gain
    assert twin.ensemble_gain == pytest.approx(0.0, abs=1e-12)

    probe = fake_results(data, folds, noisy(np.random.default_rng(4)))[0]  # another member, other noise
    summary, _ = summarize_cv(data, folds, results, probe=probe)
    assert summary.ensemble_gain_pair > 0  # averaging independent noise helps
    assert summary.ensemble_gain == pytest.approx(EnsembleGain(summary.ensemble_gain_pair, 3).scaled)
    assert summary.ensemble_gain == pytest.approx(summary.ensemble_gain_pair * 4 / 3)
    assert summary.oof_score_postprocessed == plain.oof_score_postprocessed  # the estimate itself is unchanged
    assert summary.expected_ensemble_score == pytest.approx(summary.oof_score_postprocessed + summary.ensemble_gain)
    assert summary.oof_score_postprocessed_pi_low == pytest.approx(
        plain.oof_score_postprocessed_pi_low + summary.ensemble_gain
    )
    assert summary.oof_score_postprocessed_pi_high == pytest.approx(
        plain.oof_score_postprocessed_pi_high + summary.ensemble_gain
    )
    metrics = interval_metrics(summary)
    assert metrics[names.EXPECTED_SCORE] == summary.expected_ensemble_score
    assert metrics[names.ENSEMBLE_GAIN_PAIR] == summary.ensemble_gain_pair
    assert f"ensemble    {summary.expected_ensemble_score:.4f}" in format_summary_table(summary)
