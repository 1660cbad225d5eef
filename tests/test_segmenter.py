"""The one inference path: ``Segmenter`` writes today's submission CSV byte for byte, and segments new images
of any size and colour exactly as the submission segments Kaggle's frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nerveseg.config import TrainConfig
from nerveseg.evaluate.postprocess_settings import PostprocessDecision, PostprocessSettings
from nerveseg.tasks.base import TrainedModels

pytestmark = pytest.mark.slow  # trains two tiny models (a few seconds)


def _train_tiny(config: TrainConfig, path: Path, seed: int) -> Path:
    """One epoch of a depth-2 U-Net on random discs: a model whose masks are neither all empty nor all full."""
    import keras

    from nerveseg.model.unet import build_model_from_config

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: config.height, : config.width]
    discs = [(yy - rng.uniform(8, 24)) ** 2 + (xx - rng.uniform(8, 32)) ** 2 < 36 for _ in range(24)]
    masks = np.stack(discs) & (np.arange(24) % 2 == 0)[:, None, None]  # every other image empty
    images = np.clip(rng.normal(60, 20, masks.shape) + 120 * masks, 0, 255).astype(np.float32) / 255
    model = build_model_from_config(config)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    present = masks.any(axis=(1, 2))[:, None].astype(np.float32)
    targets = {"mask": masks[..., None].astype(np.float32), "presence": present}
    model.fit(images[..., None], targets, epochs=1, batch_size=8, verbose=0)
    model.save_weights(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[TrainedModels]:
    """Two tiny runs of two folds each, at different input sizes (so the ensemble of runs resizes)."""
    tmp = tmp_path_factory.mktemp("segmenter")
    out = []
    for k, width in enumerate((40, 48)):
        config = TrainConfig(name=f"tiny{k}", height=32, width=width, depth=2, base_filters=4, presence_head=True)
        paths = [_train_tiny(config, tmp / f"run{k}_fold{f}.weights.h5", seed=10 * k + f) for f in range(2)]
        out.append(TrainedModels(config, paths))
    return out


@pytest.fixture(scope="module")
def decision(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """Settings that make the tiny models' test masks neither all empty nor all full, for the given runs
    and TTA: the threshold at the 80th percentile of the test probabilities, the presence gate at the
    median test presence (off with ``gate=False``)."""
    from nerveseg.data.cache import prepare_test
    from nerveseg.tasks.nerve.segmenter import Segmenter

    caches = tmp_path_factory.mktemp("decision")

    def make(runs: list[TrainedModels], tta: bool = True, gate: bool = True) -> PostprocessDecision:
        segmenter = Segmenter(runs, PostprocessDecision(PostprocessSettings()), tta=tta)
        shapes = segmenter.input_shapes
        probs, presence = segmenter.ensemble(
            {s: prepare_test(synthetic_root / "raw", caches, *s, progress=False).images for s in shapes}
        )
        settings = PostprocessSettings(
            threshold=float(np.quantile(probs, 0.8)),
            largest_component=True,
            min_area=50,
            presence_threshold=float(np.median(presence)) if gate else None,
        )
        return PostprocessDecision(settings)

    return make


def _old_write_submission(runs, decision, path: Path, raw_dir: Path, cache_dir: Path, tta: bool) -> Path:
    """``NerveTask.write_submission`` as it was before the Segmenter (commit a6a6c84), kept as the reference."""
    from nerveseg.data.cache import prepare_test
    from nerveseg.evaluate.metrics import resize_probabilities
    from nerveseg.inference.ensemble import load_fold_models, predict_ensemble
    from nerveseg.submit.submission_file import postprocess_and_write

    shape = (runs[0].config.height, runs[0].config.width)
    tests = {}
    for run in runs:
        key = (run.config.height, run.config.width)
        if key not in tests:
            tests[key] = prepare_test(raw_dir, cache_dir, *key, progress=False)
    probs = np.zeros((len(tests[shape]), *shape), np.float32)
    presences = []
    for run in runs:
        models = load_fold_models(run.config, run.weights_paths)
        run_probs, run_presence = predict_ensemble(
            models, tests[(run.config.height, run.config.width)].images, tta=tta, batch_size=4, progress=False
        )
        probs += resize_probabilities(run_probs, shape)
        presences.append(run_presence)
    presence = None if any(p is None for p in presences) else np.mean(presences, axis=0)
    return postprocess_and_write(tests[shape].ids, probs / len(runs), decision.settings, path, presence).path


@pytest.mark.parametrize(("n_runs", "tta"), [(1, True), (2, True), (1, False)])
def test_submission_through_the_segmenter_is_byte_identical(
    runs: list[TrainedModels], decision, synthetic_root: Path, tmp_path: Path, n_runs: int, tta: bool
) -> None:
    from nerveseg.tasks.nerve import NerveTask

    raw, cache = synthetic_root / "raw", tmp_path / "cache"
    chosen = runs[:n_runs]
    decision = decision(chosen, tta)
    before = _old_write_submission(chosen, decision, tmp_path / "before.csv", raw, cache, tta)
    after = NerveTask().write_submission(
        chosen, decision, tmp_path / "after.csv", raw_dir=raw, cache_dir=cache, tta=tta, batch_size=4, progress=False
    )
    assert after.path.read_bytes() == before.read_bytes()
    rows = [line.split(",")[1] for line in before.read_text().splitlines()[1:]]
    assert any(rows) and not all(rows), "the tiny model should predict some empty and some non-empty masks"


def test_new_images_segment_as_the_submission_does(
    runs: list[TrainedModels], decision, synthetic_root: Path, tmp_path: Path
) -> None:
    """Raw TIFF bytes through decode_gray + Segmenter.segment give the CSV's RLEs; RGB gives the same as gray."""
    from nerveseg.inference.images import decode_gray
    from nerveseg.tasks.nerve import NerveTask
    from nerveseg.tasks.nerve.segmenter import Segmenter

    raw = synthetic_root / "raw"
    decision = decision(runs)
    written = NerveTask().write_submission(
        runs, decision, tmp_path / "sub.csv", raw_dir=raw, cache_dir=tmp_path / "c", tta=True, batch_size=4,
        progress=False,
    )  # fmt: skip
    expected = dict(line.split(",") for line in written.path.read_text().splitlines()[1:])
    files = sorted((raw / "test").glob("*.tif"), key=lambda p: int(p.stem))
    gray = [decode_gray(p.read_bytes(), p.name) for p in files]
    segmenter = Segmenter(runs, decision, tta=True, batch_size=4)
    results = segmenter.segment(gray, masks=True)
    assert [r.rle for r in results] == [expected[p.stem] for p in files]
    assert all(r.present == (r.area > 0) == bool(r.rle) for r in results)
    assert all(r.mask is not None and r.mask.shape == (420, 580) and r.area == r.mask.sum() for r in results)
    rgb = [np.repeat(image[..., None], 3, axis=2) for image in gray]
    assert [r.rle for r in segmenter.segment(rgb)] == [r.rle for r in results]
    assert segmenter.n_forward_passes == 8  # 2 runs x 2 folds x (identity, mirror)


def test_any_size_mask_comes_back_at_the_input_size(runs: list[TrainedModels], decision, synthetic_root: Path) -> None:
    from nerveseg.inference.images import ImageError, decode_gray
    from nerveseg.tasks.nerve.segmenter import Segmenter

    segmenter = Segmenter(runs[:1], decision(runs[:1], tta=False, gate=False), tta=False)
    image = decode_gray((synthetic_root / "raw" / "test" / "1.tif").read_bytes(), "1.tif")
    small = cv2.resize(image, (290, 210), interpolation=cv2.INTER_AREA)
    result = segmenter.segment([small, image], masks=True)
    assert result[0].mask.shape == (210, 290) and result[1].mask.shape == (420, 580)
    assert 0.0 <= result[0].probability <= 1.0  # the presence head's mean
    with pytest.raises(ImageError, match="no images"):
        segmenter.segment([])
    with pytest.raises(ImageError, match="uint16"):
        segmenter.segment([image.astype(np.uint16)])


def test_decode_gray_refuses_what_is_not_an_image() -> None:
    from nerveseg.inference.images import ImageError, decode_gray

    with pytest.raises(ImageError, match="empty"):
        decode_gray(b"", "a.png")
    with pytest.raises(ImageError, match="not a readable image"):
        decode_gray(b"hello, not a picture", "b.jpg")
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., 2] = 200  # red in OpenCV's BGR order
    gray = decode_gray(cv2.imencode(".png", rgb)[1].tobytes(), "c.png")
    assert gray.shape == (5, 7) and int(gray[0, 0]) == int(cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)[0, 0])


def test_decode_all_keeps_the_order_and_names_the_bad_file() -> None:
    from nerveseg.inference.images import ImageError, decode_all

    files = [(cv2.imencode(".png", np.full((3, 4), v, np.uint8))[1].tobytes(), f"{v}.png") for v in (10, 20, 30)]
    assert [int(image[0, 0]) for image in decode_all(files)] == [10, 20, 30]
    with pytest.raises(ImageError, match=r"bad\.tif: is empty"):
        decode_all([*files, (b"", "bad.tif")])
