"""Kaggle's competition data into ``data/raw``: the zip a user downloaded, or one the Kaggle client downloads now.

The verb behind ``src/get_data.py``. The raw folder is checked first (it must be missing or empty: nothing there is
ever replaced), so a refusal never comes after a gigabyte's download; the zip is then unpacked all or nothing
(``data.kaggle_zip``) and what it held is summarised with the commands to run next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nerveseg.data.kaggle_zip import Unpacked, raw_dir_leftovers, unpack_competition_zip
from nerveseg.io_utils import check_outside, check_writable_dir
from nerveseg.kaggle_client import download_competition
from nerveseg.paths import DATA_DIR, RAW_DIR

DOWNLOAD_DIR = DATA_DIR / "kaggle"  # where the client's zip is kept (it skips a download that is up to date)


@dataclass(frozen=True)
class DataFetched:
    """The unpacked data and the zip it came from (``downloaded``: the Kaggle client fetched it just now)."""

    unpacked: Unpacked
    zip_path: Path
    downloaded: bool


def get_data(raw_dir: Path = RAW_DIR, zip_path: Path | None = None, download_dir: Path = DOWNLOAD_DIR) -> DataFetched:
    """Unpack ``zip_path`` (None: download the competition's zip into ``download_dir`` with the Kaggle client)
    into ``raw_dir``, which must be missing or empty (hidden files such as ``.gitkeep`` aside)."""
    raw_dir = Path(raw_dir)
    raw_dir_leftovers(raw_dir)  # refuses a raw folder that holds data, before any download
    check_writable_dir(raw_dir.parent, "--raw-dir's folder")  # the unpacking folder is made there, then renamed
    downloaded = zip_path is None
    if zip_path is None:
        check_outside(download_dir, raw_dir, "--download-dir")
        check_writable_dir(download_dir, "--download-dir")
        zip_path = download_competition(Path(download_dir))
    return DataFetched(unpack_competition_zip(Path(zip_path), raw_dir), Path(zip_path), downloaded)


def subjects_in_test_set(unpacked: Unpacked) -> int:
    """How many subjects the test images make if each has as many frames as a training subject (Kaggle: 5508 /
    (5635 / 47) = 46); what ``cv_train.py --predict-subjects`` should be told for a leaderboard-sized interval."""
    if not unpacked.test_images or not unpacked.subjects:
        return 0
    return max(1, round(unpacked.test_images / (unpacked.train_pairs / unpacked.subjects)))


def describe(fetched: DataFetched, default_raw_dir: Path = RAW_DIR) -> str:
    """What was found and what to run next, as printed by ``src/get_data.py``."""
    found = fetched.unpacked
    same = Path(found.raw_dir).resolve() == Path(default_raw_dir).resolve()
    raw_option = "" if same else f" --raw-dir {found.raw_dir}"
    lines = [
        f"unpacked {fetched.zip_path} into {found.raw_dir}:",
        f"  train: {found.train_pairs} image/mask pairs of {found.subjects} subjects",
        f"  test:  {found.test_images} images" if found.test_images else "  test:  none (submit.py will need test/)",
        f"  CSVs:  {', '.join(found.csv_files) or 'none'}",
    ]
    if found.skipped:
        lines.append(f"  ({found.skipped} other entries of the zip skipped: not part of the layout)")
    if fetched.downloaded:
        lines.append(f"the zip stays in {fetched.zip_path.parent} (delete it once you no longer need it)")
    subjects = subjects_in_test_set(found)
    predict = f" --predict-subjects {subjects}" if subjects else ""
    lines += [
        "next:",
        f"  python src/prepare_data.py{raw_option}    # validate every TIFF, cache, fold split, audit",
        f"  python src/cv_train.py --folds 5 --config experiments/baseline.yaml{raw_option}{predict}",
    ]
    if subjects:
        lines.append(
            f"  ({predict.strip()}: the CV's prediction interval is then for the {found.test_images} test images, "
            f"taken as {subjects} subjects of {found.train_pairs / found.subjects:.0f} frames like the training set's)"
        )
    return "\n".join(lines)


__all__ = ["DOWNLOAD_DIR", "DataFetched", "describe", "get_data", "subjects_in_test_set"]
