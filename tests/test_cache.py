"""Model-size arrays, packed full-size masks, and the cache that rebuilds only when it must."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from helpers import nerve_mask, snapshot, structured_image, write_set, write_tif
from nerveseg.data import cache as preprocess
from nerveseg.data.cache import load_or_build_test, load_or_build_train, prepare_train, resize_image, resize_mask
from nerveseg.data.raw import index_train, read_mask


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    return write_set(tmp_path / "raw")


def _no_decoding(*args: object, **kwargs: object) -> None:
    raise AssertionError("a cache hit must not decode any file")


def test_resize_image_and_mask() -> None:
    image = structured_image(1)
    small = resize_image(image, 32, 40)
    assert small.shape == (32, 40) and small.dtype == np.uint8
    assert abs(float(small.mean()) - float(image.mean())) < 1.0  # area averaging keeps the brightness
    mask = nerve_mask(False)
    for given in (mask, mask // 255):
        shrunk = resize_mask(given, 32, 40)
        assert shrunk.dtype == np.uint8 and set(np.unique(shrunk)) == {0, 1}
        scale = (420 * 580) / (32 * 40)
        assert shrunk.sum() == pytest.approx((mask > 0).sum() / scale, rel=0.1)
    np.testing.assert_array_equal(image, structured_image(1))  # the input is not modified


def test_resize_mask_rebinarises_at_half_coverage() -> None:
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[:, :2] = 1  # left 2x2 blocks full
    mask[0, 2] = mask[1, 2] = 1  # top-right block half covered -> foreground
    mask[2, 2] = 1  # bottom-right block a quarter covered -> background
    np.testing.assert_array_equal(resize_mask(mask, 2, 2), [[1, 1], [1, 0]])


def test_prepare_train_arrays(raw: Path, tmp_path: Path) -> None:
    data = prepare_train(raw, tmp_path / "cache", height=32, width=40, workers=2, progress=False)
    assert len(data) == 6
    assert data.ids.tolist() == ["1_1", "1_2", "1_3", "2_1", "2_2", "2_3"]
    assert data.subjects.tolist() == [1, 1, 1, 2, 2, 2]
    assert data.images.shape == (6, 32, 40) and data.images.dtype == np.uint8
    assert data.masks.shape == (6, 32, 40) and data.masks.dtype == np.uint8
    assert set(np.unique(data.masks)) == {0, 1}
    assert data.has_mask.tolist() == [True, True, False, True, True, False]
    assert data.masks[data.has_mask].any(axis=(1, 2)).all() and not data.masks[~data.has_mask].any()
    np.testing.assert_array_equal(data.images[0], resize_image(structured_image(1001), 32, 40))
    assert len(data.fingerprint) == 64 and int(data.fingerprint, 16) >= 0


def test_full_masks_round_trip_exactly(raw: Path, tmp_path: Path) -> None:
    data = prepare_train(raw, tmp_path / "cache", height=32, width=40, progress=False)
    truth = np.stack([read_mask(p) for p in index_train(raw)["mask_path"]])
    full = data.full_masks(slice(None))
    assert full.shape == (6, 420, 580) and full.dtype == np.uint8
    np.testing.assert_array_equal(full, truth)
    np.testing.assert_array_equal(data.full_masks(np.array([4, 1])), truth[[4, 1]])
    np.testing.assert_array_equal(data.full_masks(3), truth[3])
    assert data.mask_areas.tolist() == truth.sum(axis=(1, 2)).tolist()


def test_cache_hit_loads_identical_arrays_without_decoding(
    raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first, status = load_or_build_train(raw, cache, 32, 40, progress=False)
    assert not status.hit and status.path.parent == cache and status.path.is_file()
    monkeypatch.setattr(preprocess, "_decode_train_pair", _no_decoding)
    second, status = load_or_build_train(raw, cache, 32, 40, progress=False)
    assert status.hit and status.seconds < 1.0
    for field in ("ids", "subjects", "images", "masks", "masks_full_packed", "descriptors"):
        np.testing.assert_array_equal(getattr(first, field), getattr(second, field))
    assert first.fingerprint == second.fingerprint


def test_changed_file_or_size_rebuilds(raw: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first, _ = load_or_build_train(raw, cache, 32, 40, progress=False)
    other_size, status = load_or_build_train(raw, cache, 16, 24, progress=False)
    assert not status.hit and other_size.images.shape == (6, 16, 24)
    assert other_size.fingerprint == first.fingerprint, "the content fingerprint does not depend on the size"

    changed = raw / "train" / "2_2.tif"
    write_tif(changed, structured_image(7))
    os.utime(changed, ns=(10**18, 10**18))  # a distinct mtime even on coarse file-system clocks
    second, status = load_or_build_train(raw, cache, 32, 40, progress=False)
    assert not status.hit
    assert second.fingerprint != first.fingerprint
    np.testing.assert_array_equal(second.images[4], resize_image(structured_image(7), 32, 40))
    assert sorted(p.name.split("_")[1] for p in cache.glob("train_*.npz")) == ["16x24", "32x40"], "stale cache kept"


def test_touching_files_rebuilds_with_the_same_content_fingerprint(raw: Path, tmp_path: Path) -> None:
    first, _ = load_or_build_train(raw, tmp_path / "cache", 32, 40, progress=False)
    for path in (raw / "train").iterdir():
        os.utime(path, ns=(10**18, 10**18))
    second, status = load_or_build_train(raw, tmp_path / "cache", 32, 40, progress=False)
    assert not status.hit and second.fingerprint == first.fingerprint


def test_corrupt_cache_file_is_rebuilt(raw: Path, tmp_path: Path) -> None:
    _, status = load_or_build_train(raw, tmp_path / "cache", 32, 40, progress=False)
    status.path.write_bytes(b"PK\x03\x04 broken")
    data, again = load_or_build_train(raw, tmp_path / "cache", 32, 40, progress=False)
    assert not again.hit and len(data) == 6
    assert load_or_build_train(raw, tmp_path / "cache", 32, 40, progress=False)[1].hit


def test_prepare_test_and_raw_folder_untouched(raw: Path, tmp_path: Path) -> None:
    before = snapshot(raw)
    test, status = load_or_build_test(raw, tmp_path / "cache", 32, 40, progress=False)
    assert not status.hit and len(test) == 3
    assert test.ids.tolist() == [1, 2, 10] and test.images.shape == (3, 32, 40)
    np.testing.assert_array_equal(test.images[2], resize_image(structured_image(100_010), 32, 40))
    assert load_or_build_test(raw, tmp_path / "cache", 32, 40, progress=False)[1].hit
    prepare_train(raw, tmp_path / "cache", 32, 40, progress=False)
    assert snapshot(raw) == before


@pytest.mark.parametrize(("height", "width", "workers"), [(0, 40, None), (32, 40, -1)])
def test_bad_settings_are_value_errors(raw: Path, tmp_path: Path, height: int, width: int, workers: int | None) -> None:
    with pytest.raises(ValueError, match=r"height|workers"):
        prepare_train(raw, tmp_path / "cache", height, width, workers=workers, progress=False)
