"""Validate the raw data, build (or load) the caches, write the fold file and print the data audit.

python src/prepare_data.py [--raw-dir data/raw] [--height 64 --width 80] [--folds 5 --seed 42]
"""

from __future__ import annotations

import argparse
import sys

from nerveseg.cli import ArgumentParser, add_data_folders, check_outside_raw, one_line_errors
from nerveseg.config import TrainConfig, check_option_range
from nerveseg.data.audit import prepare
from nerveseg.io_utils import check_writable_dir


@one_line_errors()  # NervesegError (DataError, ConfigError, TrackingError...): one line
def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_folders(parser, "Kaggle's layout: train/ and optionally test/")
    parser.add_argument("--height", type=int, default=defaults.height, help="model input rows")
    parser.add_argument("--width", type=int, default=defaults.width, help="model input columns")
    parser.add_argument("--folds", type=int, default=defaults.folds, help="number of cross-validation folds")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the fold split")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="re-hash the raw files (the cache trusts name, size and mtime) and rebuild it if their content changed",
    )
    args = parser.parse_args(argv)
    for key in ("height", "width", "folds", "seed"):  # the config's limits, before a 690 MB cache is written
        check_option_range(key, getattr(args, key), f"--{key}")
    check_outside_raw(args, "--cache-dir", "--folds-dir")
    check_writable_dir(args.cache_dir, "--cache-dir")  # before minutes of decoding
    check_writable_dir(args.folds_dir, "--folds-dir")
    result = prepare(
        raw_dir=args.raw_dir,
        cache_dir=args.cache_dir,
        folds_dir=args.folds_dir,
        height=args.height,
        width=args.width,
        n_folds=args.folds,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        verify=args.verify,
    )
    print(result.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
