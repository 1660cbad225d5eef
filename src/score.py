"""Score a submission CSV against ground-truth masks: ``python src/score.py CSV --masks DIR [--per-image [OUT]]``.

Useful with synthetic data, whose test masks the generator writes too (``make demo``: ``data/demo/test_masks``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_create_text, check_outside, check_writable_dir
from nerveseg.paths import RAW_DIR
from nerveseg.submit.submission_file import score_submission


def check_new_output(out: Path, masks_dir: Path, raw_dir: Path) -> Path:
    """``--per-image OUT`` must be a new file outside the raw data and the ground-truth folder (never replaced:
    it could be the submission being scored or a mask), in a folder that takes files."""
    if out.exists() or out.is_symlink():
        raise NervesegError(f"--per-image {out} already exists; nothing is overwritten, pass a new file name")
    check_outside(out, raw_dir, "--per-image")
    check_outside(out, masks_dir, "--per-image", "the ground-truth folder --masks")
    check_writable_dir(out.parent, "--per-image folder")
    return out


@one_line_errors()  # NervesegError (DataError, ConfigError, TrackingError...): one line
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Mean Dice (Kaggle's metric) of a submission against <id>_mask.tif")
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
    parser.add_argument(
        "--raw-dir", type=Path, default=RAW_DIR, help=f"raw data, which --per-image never writes into ({RAW_DIR})"
    )
    args = parser.parse_args(argv)
    out = None if args.per_image in (None, "-") else check_new_output(Path(args.per_image), args.masks, args.raw_dir)
    score, per_image = score_submission(args.csv, args.masks)
    if args.per_image == "-":
        print(per_image.to_string(index=False))
    elif out is not None:
        try:
            atomic_create_text(out, per_image.to_csv(index=False))
        except FileExistsError:
            raise NervesegError(f"--per-image {out} appeared meanwhile; pass a new name") from None
        print(f"per-image scores written to {out}")
    print(f"score {score:.6f} over {len(per_image)} images ({args.csv})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
