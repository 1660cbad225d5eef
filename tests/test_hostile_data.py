"""Hostile raw data and options for ``src/prepare_data.py`` (issue 18): symbolic links, crafted TIFF headers,
multi-page files, PNG bytes named .tif, out-of-range sizes and seeds, a cache inside the raw folder.

Each case runs the command as a user would and expects exit 2, one ``error:`` line naming the file or
option, an unchanged raw folder and no cache written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from helpers import (
    ROOT,
    assert_one_line_error,
    crafted_tiff_header,
    run_script,
    structured_image,
    tree_digest,
    write_set,
)


def _png_bytes() -> bytes:
    ok, encoded = cv2.imencode(".png", structured_image(0))
    assert ok
    return encoded.tobytes()


def _two_pages(path: Path) -> None:
    tifffile.imwrite(path, np.stack([structured_image(0), structured_image(1)]), photometric="minisblack")


BAD_FILES = {
    "gigapixel header": (lambda p: p.write_bytes(crafted_tiff_header(40_000, 40_000)), "40000x40000"),
    "other size": (lambda p: p.write_bytes(crafted_tiff_header(600, 400)), "600x400"),
    "multi-page": (_two_pages, "2 pages"),
    "PNG named .tif": (lambda p: p.write_bytes(_png_bytes()), "PNG"),
    "larger than any raw image": (lambda p: p.write_bytes(b"II*\x00" + bytes(5 << 20)), "larger than any"),
    "self-loop symlink": (lambda p: (p.unlink(), p.symlink_to(p.name)), "symbolic link"),
    "dangling symlink": (lambda p: (p.unlink(), p.symlink_to(p.parent / "gone.tif")), "symbolic link"),
}


@pytest.fixture()
def folders(tmp_path: Path) -> dict[str, Path]:
    return {
        "raw": write_set(tmp_path / "raw", subjects=(1, 2), images=(1, 2)),
        "cache": tmp_path / "cache",
        "folds": tmp_path / "folds",
    }


def prepare(folders: dict[str, Path], *extra: object) -> subprocess.CompletedProcess:
    return run_script(
        "prepare_data.py",
        "--raw-dir", folders["raw"], "--cache-dir", folders["cache"], "--folds-dir", folders["folds"],
        "--height", 32, "--width", 40, "--folds", 2, "--workers", 1, "--no-progress", *extra,
    )  # fmt: skip


@pytest.mark.slow  # runs the command in a subprocess
def test_the_tiny_set_prepares(folders: dict[str, Path]) -> None:
    done = prepare(folders)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("case", BAD_FILES)
@pytest.mark.parametrize("name", ["2_1.tif", "2_1_mask.tif"])
def test_a_hostile_raw_file_is_one_line_naming_it(folders: dict[str, Path], case: str, name: str) -> None:
    damage, words = BAD_FILES[case]
    path = folders["raw"] / "train" / name
    damage(path)
    before = tree_digest(folders["raw"])
    done = prepare(folders)
    assert_one_line_error(done, f"{path}:", words)
    assert tree_digest(folders["raw"]) == before
    assert not list(folders["cache"].glob("*.npz"))


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_hostile_raw_file_is_refused_in_process(folders: dict[str, Path], case: str) -> None:
    """The fast twin of the command test above: ``prepare_train`` itself, one line naming the file."""
    from nerveseg.data.cache import prepare_train
    from nerveseg.data.raw import DataError

    damage, words = BAD_FILES[case]
    path = folders["raw"] / "test" / "10.tif"  # the test images go through the same checks
    damage(path)
    train = folders["raw"] / "train" / "1_2_mask.tif"
    damage(train)
    before = tree_digest(folders["raw"])
    with pytest.raises(DataError) as caught:
        prepare_train(folders["raw"], folders["cache"], 32, 40, workers=1, progress=False)
    message = str(caught.value)
    assert message.startswith(f"{train}:") and words in message and "\n" not in message
    assert tree_digest(folders["raw"]) == before


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize(
    ("option", "value"),
    [("--height", 100_000), ("--width", 8), ("--seed", -5), ("--folds", 1)],
)
def test_out_of_range_options_are_refused_before_any_work(folders: dict[str, Path], option: str, value: int) -> None:
    before = tree_digest(folders["raw"])
    done = prepare(folders, option, value)
    assert_one_line_error(done, f"{option} {value}", "out of range")
    assert tree_digest(folders["raw"]) == before
    assert not folders["cache"].exists()


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("option", ["--cache-dir", "--folds-dir"])
@pytest.mark.parametrize("inside", ["", "train"])
def test_an_output_folder_inside_the_raw_folder_is_refused(folders: dict[str, Path], option: str, inside: str) -> None:
    target = folders["raw"] / inside if inside else folders["raw"]
    before = tree_digest(folders["raw"])
    done = prepare(folders, option, target)
    assert_one_line_error(done, option, str(target), "never written")
    assert tree_digest(folders["raw"]) == before


def test_the_cache_refuses_the_raw_folder_itself(folders: dict[str, Path]) -> None:
    """The library backstop behind the options (tune, cv_train, submit all reach it): called directly."""
    from nerveseg.data.cache import prepare_train
    from nerveseg.errors import NervesegError

    with pytest.raises(NervesegError, match=r"cache folder .* lies inside the raw data folder"):
        prepare_train(folders["raw"], folders["raw"] / "train", 32, 40, workers=1, progress=False)


def test_the_cache_key_names_a_link_that_broke_after_the_listing(tmp_path: Path) -> None:
    """``_stat_key`` on its own (a link can break between the listing and the stat): a DataError naming it."""
    from nerveseg.data.cache import _stat_key
    from nerveseg.data.raw import DataError

    loop = tmp_path / "1_1.tif"
    loop.symlink_to(loop.name)
    with pytest.raises(DataError, match=r"1_1\.tif: cannot be read"):
        _stat_key("train", [loop], 32, 40)


PEAK = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    from nerveseg.data.raw import DataError, read_image
    read_image(Path(sys.argv[2]))  # a valid image first: every import and codec is warm
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_image(Path(sys.argv[1]))
    except DataError as err:
        print("refused:", err, file=sys.stderr)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print((after - before) // 1024)  # kB on Linux -> MB
    """
)


@pytest.mark.slow  # runs the command in a subprocess
@pytest.mark.parametrize("case", ["gigapixel header", "larger than any raw image"])
def test_refusing_a_huge_file_costs_under_50_mb(folders: dict[str, Path], case: str) -> None:
    """Peak resident memory of a fresh process that reads one hostile file (its high-water mark grows by
    what the refusal allocated); the 5 MB file is refused by its size, the gigapixel header by its tags."""
    path = folders["raw"] / "train" / "2_1.tif"
    BAD_FILES[case][0](path)
    done = subprocess.run(
        [sys.executable, "-c", PEAK, str(path), str(folders["raw"] / "train" / "1_1.tif")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stderr
    assert int(done.stdout.strip()) < 50
