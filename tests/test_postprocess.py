"""Post-processing: applied as decided, and decided only when a step raises the OOF score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nerveseg.evaluate.metrics import competition_score, to_full_resolution
from nerveseg.evaluate.postprocess import (
    apply_postprocessing,
    decide_postprocessing,
    iter_postprocessed,
)
from nerveseg.evaluate.postprocess_settings import PostprocessDecision, PostprocessSettings

SMALL = (42, 58)  # each model pixel is 10x10 full-resolution pixels


def _blob(shape: tuple[int, int], top: int, left: int, height: int, width: int, value: float = 0.9) -> np.ndarray:
    probs = np.zeros(shape, np.float32)
    probs[top : top + height, left : left + width] = value
    return probs


def _truth_from(clean_probs: np.ndarray) -> np.ndarray:
    """Ground truth that threshold 0.5 reproduces exactly (so only the later steps can help)."""
    return (to_full_resolution(clean_probs) > 0.5).astype(np.uint8)


def _score(
    probs: np.ndarray, truth: np.ndarray, settings: PostprocessSettings, presence: np.ndarray | None = None
) -> float:
    return competition_score(truth, apply_postprocessing(to_full_resolution(probs), settings, presence))


def test_apply_threshold_largest_component_min_area_presence() -> None:
    probs = np.zeros((3, 420, 580), np.float32)
    probs[0, 10:110, 10:110] = 0.8  # 10000 px
    probs[0, 300:310, 300:310] = 0.8  # 100 px stray blob
    probs[1, 50:70, 50:70] = 0.6  # 400 px
    probs[2, 100:200, 100:200] = 0.4  # below 0.5
    original = probs.copy()
    settings = PostprocessSettings(largest_component=True, min_area=500)
    masks = apply_postprocessing(probs, settings)
    assert masks.dtype == np.uint8 and masks.shape == probs.shape
    np.testing.assert_array_equal(probs, original)  # input untouched
    assert masks[0].sum() == 10000 and masks[0, 305, 305] == 0
    assert masks[1].sum() == 0  # emptied by min_area
    assert masks[2].sum() == 0  # below threshold
    assert apply_postprocessing(probs, PostprocessSettings(threshold=0.3))[2].sum() == 10000
    gated = apply_postprocessing(probs, PostprocessSettings(presence_threshold=0.5), np.array([0.9, 0.9, 0.1]))
    assert gated[0].sum() == 10100 and gated[1].sum() == 400
    with pytest.raises(ValueError, match="presence"):
        apply_postprocessing(probs, PostprocessSettings(presence_threshold=0.5))
    with pytest.raises(ValueError, match="to_full_resolution"):
        apply_postprocessing(np.zeros((1, 64, 80)), PostprocessSettings())
    with pytest.raises(ValueError, match="lack"):
        apply_postprocessing(probs, {"threshold": 0.5})


def test_min_area_is_kept_only_when_it_raises_the_score() -> None:
    # 6 images with a real nerve predicted right, 6 empty images with a small false blob (~400 px).
    clean = np.stack([_blob(SMALL, 10, 20, 11, 12) for _ in range(6)] + [np.zeros(SMALL, np.float32)] * 6)
    noisy = clean.copy()
    noisy[6:, 30:32, 40:42] = 0.9
    truth = _truth_from(clean)
    settings = decide_postprocessing(noisy, truth, progress=False)
    assert settings.settings.min_area > 0
    assert settings.settings.threshold == 0.5 and settings.settings.largest_component is False
    assert settings.oof_score_raw == pytest.approx(0.5, abs=0.01)
    assert settings.oof_score == pytest.approx(1.0)
    assert [s["step"] for s in settings.steps] == [
        "threshold",
        "largest_component",
        "min_area",
        "presence_threshold",
    ]
    assert [s["kept"] for s in settings.steps] == [False, False, True, False]
    assert settings.oof_score == pytest.approx(_score(noisy, truth, settings.settings))
    assert PostprocessDecision.from_json(json.loads(json.dumps(settings.to_json()))) == settings

    # Same, but the small blobs are real nerves: emptying them would lower the score -> not kept.
    truth_small = _truth_from(noisy)
    kept = decide_postprocessing(noisy, truth_small, progress=False)
    assert kept.settings.min_area == 0 and kept.settings.largest_component is False
    assert kept.oof_score == kept.oof_score_raw == pytest.approx(1.0)


def test_largest_component_and_threshold_steps() -> None:
    clean = np.stack([_blob(SMALL, 8, 10, 12, 14) for _ in range(4)])
    noisy = clean.copy()
    noisy[:, 30:33, 45:48] = 0.9  # stray second component in every image
    truth = _truth_from(clean)
    settings = decide_postprocessing(noisy, truth, progress=False)
    assert settings.settings.largest_component is True
    assert settings.steps[1]["kept"] and settings.oof_score > settings.oof_score_raw
    assert settings.oof_score == pytest.approx(_score(noisy, truth, settings.settings))

    # Probabilities that are 0.4 on the nerve: a threshold below 0.5 raises the score.
    low = clean * (0.4 / 0.9)
    decided = decide_postprocessing(low, truth, progress=False, chunk_size=3)
    assert decided.settings.threshold < 0.4
    assert decided.steps[0]["kept"] and decided.oof_score > 0.9 > decided.oof_score_raw
    assert decided.oof_score == pytest.approx(_score(low, truth, decided.settings))


def test_presence_gate_when_it_helps() -> None:
    clean = np.stack([_blob(SMALL, 10, 20, 11, 12) for _ in range(4)] + [np.zeros(SMALL, np.float32)] * 4)
    noisy = clean.copy()
    noisy[4:, 5:15, 5:15] = 0.9  # large false masks (10000 px) that min_area cannot remove
    presence = np.array([0.9, 0.8, 0.7, 0.95, 0.1, 0.2, 0.05, 0.3])
    truth = _truth_from(clean)
    settings = decide_postprocessing(noisy, truth, presence, progress=False)
    assert settings.settings.min_area == 0
    assert settings.settings.presence_threshold is not None and 0.3 < settings.settings.presence_threshold <= 0.7
    assert settings.oof_score == pytest.approx(1.0)
    assert settings.oof_score == pytest.approx(_score(noisy, truth, settings.settings, presence))
    # masks through iter_postprocessed (the submission path) equal the direct application
    chunks = [m for _, m in iter_postprocessed(noisy, settings.settings, presence, chunk_size=3)]
    np.testing.assert_array_equal(
        np.concatenate(chunks), apply_postprocessing(to_full_resolution(noisy), settings.settings, presence)
    )


def test_decide_takes_a_getter_and_checks_inputs() -> None:
    clean = np.stack([_blob(SMALL, 10, 20, 11, 12)] * 3)
    truth = _truth_from(clean)
    calls = []

    def getter(index: np.ndarray) -> np.ndarray:
        calls.append(index.tolist())
        return truth[index]

    decide_postprocessing(clean, getter, progress=False, chunk_size=2)
    assert calls == [[0, 1], [2]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        decide_postprocessing(clean * 3, truth, progress=False)
    with pytest.raises(ValueError, match="aligned"):
        decide_postprocessing(clean, truth, np.ones(5), progress=False)
    with pytest.raises(ValueError, match="580x420"):
        decide_postprocessing(clean, truth[:, :100], progress=False)


def test_settings_round_trip_through_json_with_the_same_keys() -> None:
    settings = PostprocessSettings(threshold=0.4, largest_component=True, min_area=2000, presence_threshold=0.5)
    values = json.loads(json.dumps(settings.to_json()))
    assert set(values) == {"version", "threshold", "largest_component", "min_area", "presence_threshold"}
    assert PostprocessSettings.from_json(values) == settings
    # an older postprocessing.json (whole numbers as floats, extra report keys) still reads
    old = {"threshold": 1 / 2, "largest_component": False, "min_area": 1500.0, "presence_threshold": None, "steps": []}
    assert PostprocessSettings.from_json(old) == PostprocessSettings(min_area=1500)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"threshold": 0.5}, "lacks"),
        ({"threshold": 1.5, "largest_component": False, "min_area": 0, "presence_threshold": None}, "threshold=1.5"),
        ({"threshold": 0.5, "largest_component": "yes", "min_area": 0, "presence_threshold": None}, "true or false"),
        ({"threshold": 0.5, "largest_component": False, "min_area": -3, "presence_threshold": None}, "min_area=-3"),
        ({"threshold": 0.5, "largest_component": False, "min_area": 0, "presence_threshold": 2}, "presence"),
        ([0.5], "JSON object"),
    ],
)
def test_bad_settings_are_one_line_user_errors(values: object, message: str) -> None:
    from nerveseg.errors import NervesegError

    with pytest.raises(NervesegError, match=message) as caught:
        PostprocessSettings.from_json(values, source="postprocessing.json of run X")
    assert "\n" not in str(caught.value) and str(caught.value).startswith("postprocessing.json of run X")


def test_a_settings_only_file_reads_as_a_decision_without_scores() -> None:
    decision = PostprocessDecision.from_json(PostprocessSettings(min_area=10).to_json())
    assert decision.settings.min_area == 10 and decision.oof_score is None and decision.steps == ()
