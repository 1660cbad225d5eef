"""Write a synthetic stand-in for the Kaggle data in its exact layout (see nerveseg.data.synthetic).

    python src/make_synthetic.py --out data/raw --subjects 47 --images-per-subject 120 --test 5508 --seed 0

Writes OUT/train/<subject>_<image>.tif and <subject>_<image>_mask.tif, OUT/test/<id>.tif, and the test masks
(which Kaggle never published) to --test-masks (default: OUT/../synthetic_test_masks) so that a submission can be
scored locally with src/score.py. Refuses to write into non-empty folders. Same arguments -> identical files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.data.synthetic import STYLES, generate
from nerveseg.paths import RAW_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RAW_DIR, help=f"output root (default {RAW_DIR})")
    parser.add_argument("--subjects", type=int, default=47, help="training subjects (real set: 47)")
    parser.add_argument("--images-per-subject", type=int, default=120, help="frames per subject (real: 119-120)")
    parser.add_argument("--test", type=int, default=5508, help="test images, ids 1..N (real: 5508)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--test-masks", type=Path, default=None, help="where test masks go (default OUT/../synthetic_test_masks)"
    )
    parser.add_argument(
        "--style",
        choices=sorted(STYLES),
        default="realistic",
        help="realistic: as hard as the real scans at 64x80 (default); clear: the demo's easier-to-see nerve",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@one_line_errors()  # NervesegError (DataError, ConfigError, TrackingError...): one line
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    masks_dir = args.test_masks if args.test_masks is not None else args.out.parent / "synthetic_test_masks"
    start = time.perf_counter()
    generate(
        args.out,
        args.subjects,
        args.images_per_subject,
        args.test,
        args.seed,
        test_masks_dir=masks_dir,
        progress=not args.no_progress,
        workers=args.workers,
        style=args.style,
    )
    seconds = time.perf_counter() - start
    n_train = args.subjects * args.images_per_subject
    print(
        f"wrote {n_train} {args.style} training pairs ({args.subjects} subjects x {args.images_per_subject}) "
        f"to {args.out / 'train'}, "
        f"{args.test} test images to {args.out / 'test'} and their masks to {masks_dir} "
        f"in {seconds:.0f} s ({(n_train + args.test) / max(seconds, 1e-9):.0f} images/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
