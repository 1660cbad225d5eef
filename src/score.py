"""Score a submission CSV against ground-truth masks: ``python src/score.py CSV --masks DIR [--per-image [OUT]]``.

Useful with synthetic data, whose test masks are written to ``data/synthetic_test_masks``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerveseg.cli import one_line_errors
from nerveseg.submit.submission_file import score_submission


@one_line_errors()  # NervesegError (DataError, ConfigError, TrackingError...): one line
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mean Dice (Kaggle's metric) of a submission against <id>_mask.tif")
    parser.add_argument("csv", type=Path, help="submission CSV (img,pixels)")
    parser.add_argument("--masks", type=Path, required=True, help="folder of <id>_mask.tif ground truth")
    parser.add_argument(
        "--per-image",
        nargs="?",
        const="-",
        default=None,
        metavar="OUT.csv",
        help="also print per-image Dice, or write it to OUT.csv",
    )
    args = parser.parse_args(argv)
    score, per_image = score_submission(args.csv, args.masks)
    if args.per_image == "-":
        print(per_image.to_string(index=False))
    elif args.per_image is not None:
        from nerveseg.io_utils import atomic_write_text

        atomic_write_text(Path(args.per_image), per_image.to_csv(index=False))
        print(f"per-image scores written to {args.per_image}")
    print(f"score {score:.6f} over {len(per_image)} images ({args.csv})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
