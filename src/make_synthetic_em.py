"""Write synthetic EM slices with membrane labels in the ISBI 2012 PNG layout (see nerveseg.tasks.isbi2012.synthetic).

    python src/make_synthetic_em.py --out data/raw/isbi2012 --train 30 --test 30 --size 512 --seed 0

Writes OUT/train/image/<k>.png, OUT/train/label/<k>.png (255 = cell, 0 = membrane) and OUT/test/<k>.png.
Refuses to write into a non-empty folder. Same arguments -> identical files.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.tasks.isbi2012.data import ISBI_DIR
from nerveseg.tasks.isbi2012.synthetic import generate_em


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ISBI_DIR, help=f"output root (default {ISBI_DIR})")
    parser.add_argument("--train", type=int, default=30, help="labelled training slices (challenge: 30)")
    parser.add_argument("--test", type=int, default=30, help="test slices (challenge: 30)")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels (challenge: 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


@one_line_errors()  # NervesegError (bad arguments, a non-empty folder): one line
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    generate_em(args.out, args.train, args.test, args.size, args.seed, progress=not args.no_progress)  # NervesegErrors
    print(
        f"wrote {args.train} training and {args.test} test slices ({args.size}x{args.size}) to {args.out} "
        f"in {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
