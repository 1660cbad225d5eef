"""The model families as one object each (model.families): the right family per config, and the ISBI U-Net's
whole-slice hook giving exactly what the ensemble code gave before it."""

from __future__ import annotations

import numpy as np
import pytest

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.inference.ensemble import predict_probs
from nerveseg.model import families
from nerveseg.model.families import ISBI_UNET, NERVE_UNET, PATCH_CNN, family_of, training_network
from nerveseg.model.unet import build_model_from_config, build_unet, unet_options

ISBI = dict(task="isbi2012", height=64, width=64, depth=3, base_filters=4, crop_size=32)


def test_each_config_gets_its_family() -> None:
    assert family_of(TrainConfig()) is NERVE_UNET
    assert family_of(TrainConfig(**ISBI)) is ISBI_UNET
    patch = TrainConfig(**{**ISBI, "model": "patch_cnn", "window": 25, "patch_filters": 4, "dense_units": 8})
    assert family_of(patch) is PATCH_CNN
    assert PATCH_CNN.training_side(patch, 64, 64) == 0 and ISBI_UNET.training_side(TrainConfig(**ISBI), 64, 64) == 32
    assert PATCH_CNN.build(patch, 0, 0).input_shape[1:3] == (25, 25)  # the window, whatever the slice size
    assert training_network(patch).input_shape[1:3] == (25, 25)  # what a fold trains: the window, the crop
    assert training_network(TrainConfig(**ISBI)).input_shape[1:3] == (32, 32)


def test_a_pair_without_a_family_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(families, "FAMILIES", {key: f for key, f in families.FAMILIES.items() if key[1] != "patch_cnn"})
    config = TrainConfig(**{**ISBI, "model": "patch_cnn", "window": 25})
    with pytest.raises(NervesegError, match="no model 'patch_cnn' for task 'isbi2012'") as error:
        family_of(config)
    assert "\n" not in str(error.value)


def test_the_nerve_family_builds_what_build_model_from_config_builds(tiny_config: TrainConfig) -> None:
    built = NERVE_UNET.build(tiny_config, tiny_config.height, tiny_config.width)
    reference = build_model_from_config(tiny_config)
    assert [w.shape for w in built.weights] == [w.shape for w in reference.weights]
    assert "presence_head" in NERVE_UNET.architecture(tiny_config)


def test_isbi_unet_slices_equal_the_ensembles_plain_view() -> None:
    """The hook on slices of another size than the model's (a twin) equals the twin through predict_probs."""
    config = TrainConfig(**ISBI)
    model = ISBI_UNET.build(config, 32, 32)
    images = np.random.default_rng(0).random((3, 64, 48), dtype=np.float32)
    twin = build_unet(64, 48, **unet_options(config))
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(ISBI_UNET.predict_slices(config, model, images), predict_probs(twin, images, 2)[0])
    assert ISBI_UNET.size_divisor(config) == 4 and PATCH_CNN.size_divisor(config) == 1
