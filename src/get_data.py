"""Kaggle's competition data into data/raw: ``python src/get_data.py [--zip PATH] [--raw-dir data/raw]``.

With ``--zip`` it unpacks the zip you downloaded from the competition's Data page; without, it downloads it first
with the Kaggle client (``pip install kaggle`` and an API token in ~/.kaggle/kaggle.json, or KAGGLE_USERNAME and
KAGGLE_KEY), as ``kaggle competitions download -c ultrasound-nerve-segmentation -p data/kaggle`` does. The zip's
train/, test/ and CSVs (directly or in inner zips) land in the raw folder in the layout prepare_data.py reads;
the raw folder must be missing or empty, and nothing half-unpacked is ever left there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.paths import RAW_DIR
from nerveseg.run.get_data import DOWNLOAD_DIR, describe, get_data


@one_line_errors()  # NervesegError (KaggleError, KaggleZipError...): one line, exit 2
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zip", type=Path, help="Kaggle's competition zip (default: download it with the client)")
    parser.add_argument(
        "--raw-dir", type=Path, default=RAW_DIR, help=f"where train/ and test/ go; missing or empty ({RAW_DIR})"
    )
    parser.add_argument(
        "--download-dir", type=Path, default=DOWNLOAD_DIR, help=f"without --zip: where the zip is kept ({DOWNLOAD_DIR})"
    )
    args = parser.parse_args(argv)
    print(describe(get_data(args.raw_dir, args.zip, args.download_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
