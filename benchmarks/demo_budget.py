"""Where the demo sits on its budget curve: the held-out lift over all-empty against CPU minutes.

Each point is a (subjects, frames per subject, base_filters, epochs) recipe of experiments/demo.yaml on its own
synthetic set (the Makefile's data seed and test size); for one training seed it runs the demo protocol
(``demo_seeds.run_seed``: cross-validation, then the submission scored on the held-out masks) and prints the
frames, the minutes, the raw OOF score against all-empty on the same folds and the held-out score against
all-empty on the test set. More subjects at a thinner width buys more than more epochs at the same minutes.

    .venv/bin/python benchmarks/demo_budget.py                          # the default points, seed 42
    .venv/bin/python benchmarks/demo_budget.py --points 96x16x8x8,160x8x8x8 --out budget.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_seeds import DEMO_CONFIG, SeedRow, makefile_demo_sizes, makefile_demo_style, run_seed
from nerveseg.data.synthetic import generate
from nerveseg.io_utils import atomic_write_text
from nerveseg.provenance import cpu_description

DEFAULT_POINTS = "24x16x16x15,48x16x8x15,64x16x8x12,96x16x8x8,160x8x8x8"


@dataclass(frozen=True)
class Point:
    subjects: int
    images: int
    base_filters: int
    epochs: int

    @property
    def frames(self) -> int:
        return self.subjects * self.images

    def label(self) -> str:
        return f"{self.subjects}x{self.images}x{self.base_filters}x{self.epochs}"


def parse_points(text: str) -> list[Point]:
    """``SUBJECTSxIMAGESxBASE_FILTERSxEPOCHS`` items separated by commas, each number >= 1."""
    points = []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        found = re.fullmatch(r"(\d+)x(\d+)x(\d+)x(\d+)", item)
        if found is None or min(int(g) for g in found.groups()) < 1:
            raise argparse.ArgumentTypeError(f"--points item {item!r}: expected SUBJECTSxIMAGESxFILTERSxEPOCHS >= 1")
        points.append(Point(*(int(g) for g in found.groups())))
    if not points:
        raise argparse.ArgumentTypeError("--points needs at least one item")
    return points


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=parse_points, default=parse_points(DEFAULT_POINTS))
    parser.add_argument("--seed", type=int, default=42, help="training seed (42, the demo config's)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def run_point(point: Point, args: argparse.Namespace, sizes: dict[str, int], root: Path) -> SeedRow:
    generate(root / "raw", point.subjects, point.images, sizes["test"], sizes["data_seed"],
             test_masks_dir=root / "masks", progress=False, style=makefile_demo_style())  # fmt: skip
    seed_args = argparse.Namespace(
        config=args.config, overrides={"base_filters": point.base_filters, "epochs": point.epochs}
    )
    return run_seed(root, args.seed, seed_args, test_subjects=-(-sizes["test"] // point.images))


HEADER = (
    f"{'point (subj x img x filters x epochs)':<38} {'frames':>6} {'min':>5} {'raw-empty':>9} {'test-empty':>10} "
    f"{'pred0':>6}"
)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sizes = makefile_demo_sizes()
    seeds = f"seed {args.seed}, {sizes['test']} test images, data seed {sizes['data_seed']}"
    print(f"demo budget, {seeds}; {cpu_description()}")
    print(HEADER, flush=True)
    rows = []
    for point in args.points:
        with tempfile.TemporaryDirectory(prefix="demo-budget-") as tmp:
            row = run_point(point, args, sizes, Path(tmp))
        rows.append({"point": asdict(point), **asdict(row)})
        print(
            f"{point.label():<38} {point.frames:>6} {row.minutes:5.1f} {row.raw_oof - row.cv_empty:+9.4f} "
            f"{row.test - row.test_empty:+10.4f} {row.predicted_empty:6.1%}",
            flush=True,
        )
    if args.out is not None:
        atomic_write_text(args.out, json.dumps({"machine": cpu_description(), "seed": args.seed, "rows": rows}))
        print(f"rows written to {args.out}")


if __name__ == "__main__":
    main()
