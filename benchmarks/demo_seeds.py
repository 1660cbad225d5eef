"""Does `make demo`'s conclusion hold over training seeds? The demo protocol for several seeds, side by side.

One synthetic demo set (the Makefile's DEMO_* sizes and seed) is generated in a temporary folder; then,
for each training seed, exactly what `make demo` runs: cross-validation of experiments/demo.yaml with
``--seed`` (which also picks that seed's folds), then the submission of that run scored on the held-out
test masks, each in the same temporary MLflow store. Per seed it prints the raw OOF score at threshold
0.5 against all-empty on the same folds, the cross-fitted post-processed OOF score with its 95 % CI and
its 95 % prediction interval for the test set's subjects, the held-out score with its interval against
all-empty on the test set, the gap (held-out - CV), the share of test images predicted empty, the worst
fold's late drop (best val_dice of the second half minus the last) and the minutes; then the median and
range over the seeds, and the machine's CPU model (timings and, slightly, the scores move with it).

    .venv/bin/python benchmarks/demo_seeds.py                    # seeds 1..5, about 5 x make demo
    .venv/bin/python benchmarks/demo_seeds.py --seeds 1,2 --out seeds.json

Targets (issue 14): raw OOF > all-empty in every seed; held-out >= all-empty + 0.05 in at least 4 of 5;
no fold's late drop above 0.10.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from nerveseg import names
from nerveseg.config import load_config
from nerveseg.data.synthetic import STYLES, generate
from nerveseg.io_utils import atomic_write_text
from nerveseg.paths import PROJ_ROOT
from nerveseg.provenance import cpu_description
from protocol import cv_then_submit

DEMO_CONFIG = PROJ_ROOT / "experiments" / "demo.yaml"
MAKEFILE = PROJ_ROOT / "Makefile"
MAKEFILE_KEYS = {
    "subjects": "DEMO_SUBJECTS",
    "images": "DEMO_IMAGES",
    "test": "DEMO_TEST",
    "data_seed": "DEMO_SEED",
    "folds": "DEMO_FOLDS",
}


def makefile_demo_sizes(makefile: Path = MAKEFILE) -> dict[str, int]:
    """The demo set's sizes from the Makefile's ``DEMO_X ?= n`` lines: one home for what `make demo` uses."""
    text = Path(makefile).read_text()
    sizes = {}
    for key, variable in MAKEFILE_KEYS.items():
        found = re.search(rf"^{variable}\s*\?=\s*(\d+)\s*$", text, re.MULTILINE)
        if found is None:
            raise SystemExit(f"error: {makefile} has no '{variable} ?= <number>' line; pass --{key.replace('_', '-')}")
        sizes[key] = int(found.group(1))
    return sizes


def makefile_demo_style(makefile: Path = MAKEFILE) -> str:
    """The demo set's generator style from the Makefile's ``DEMO_STYLE ?= name`` line (realistic when absent)."""
    found = re.search(r"^DEMO_STYLE\s*\?=\s*(\w+)\s*$", Path(makefile).read_text(), re.MULTILINE)
    return found.group(1) if found else "realistic"


def parse_seeds(text: str) -> list[int]:
    """``1,2,5`` or ``1-5`` (inclusive) or a mix; each seed once, in the order given."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if bounds is None:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected seeds like 1,2,3 or 1-5")
        low, high = int(bounds.group(1)), int(bounds.group(2) or bounds.group(1))
        if high < low:
            raise argparse.ArgumentTypeError(f"--seeds {text!r}: range {part} runs backwards")
        seeds += [s for s in range(low, high + 1) if s not in seeds]
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1-5"), help="training seeds (1-5)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--subjects", type=int, help="training subjects (default: the Makefile's DEMO_SUBJECTS)")
    parser.add_argument("--images", type=int, help="images per subject (default: DEMO_IMAGES)")
    parser.add_argument("--test", type=int, help="test images (default: DEMO_TEST)")
    parser.add_argument("--data-seed", type=int, help="generator seed (default: DEMO_SEED)")
    parser.add_argument("--style", choices=sorted(STYLES), help="generator style (default: DEMO_STYLE)")
    parser.add_argument("--folds", type=int, help="folds (default: DEMO_FOLDS)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument(
        "--work", type=Path, default=None, help="keep the data and the MLflow store (mlflow.db) in this NEW folder"
    )
    args = parser.parse_args(argv)
    if args.work is not None and args.work.exists():
        parser.error(f"--work {args.work} already exists; name a new folder")
    return finish_demo_args(parser, args, tuple(MAKEFILE_KEYS), positive=("subjects", "images", "test", "folds"))


def finish_demo_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, keys: tuple[str, ...], positive: tuple[str, ...]
) -> argparse.Namespace:
    """Sizes (``keys``) and the style not given from the Makefile, ``positive`` ones checked, ``--set`` as
    ``args.overrides``."""
    if getattr(args, "style", None) is None:
        args.style = makefile_demo_style()
    missing = [key for key in keys if getattr(args, key) is None]
    if missing:
        defaults = makefile_demo_sizes()
        for key in missing:
            setattr(args, key, defaults[key])
    for key in positive:
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1")
    args.overrides = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(args.overrides) != len(args.set):
        parser.error("--set takes KEY=VALUE")
    return args


@dataclass
class SeedRow:
    seed: int
    raw_oof: float
    cv_empty: float
    cv_pp: float
    ci_low: float
    ci_high: float
    pi_low: float
    pi_high: float
    gain: float  # the fold ensemble's measured gain (ensemble_gain_probe; 0 without): the PI is centred on cv_pp + it
    test: float
    test_ci_low: float
    test_ci_high: float
    test_empty: float
    predicted_empty: float
    worst_drop: float
    worst_drop_gated: float | None  # None: the config has no presence head
    silent_folds: int
    minutes: float

    @property
    def gap(self) -> float:
        """Held-out minus what the run expects (CV + pp plus the ensemble gain)."""
        return self.test - self.cv_pp - self.gain

    @property
    def inside_pi(self) -> bool:
        return self.pi_low <= self.test <= self.pi_high


HEADER = (
    f"{'seed':>4} {'raw OOF':>7} {'empty':>6} {'OOF+pp':>7} {'95 % CI':>11} {'gain':>7} {'95 % PI':>11} "
    f"{'test':>6} {'test CI':>11} {'empty':>6} {'t-empty':>7} {'gap':>7} {'in PI':>5} {'pred0':>5} "
    f"{'drop':>5} {'gated':>5} {'silent':>6} {'min':>5}"
)


def _optional(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def row(r: SeedRow) -> str:
    return (
        f"{r.seed:>4} {r.raw_oof:7.4f} {r.cv_empty:6.4f} {r.cv_pp:7.4f} {r.ci_low:5.3f}-{r.ci_high:5.3f} "
        f"{r.gain:+7.4f} {r.pi_low:5.3f}-{r.pi_high:5.3f} {r.test:6.4f} {r.test_ci_low:5.3f}-{r.test_ci_high:5.3f} "
        f"{r.test_empty:6.4f} {r.test - r.test_empty:+7.4f} {r.gap:+7.4f} {'yes' if r.inside_pi else 'NO':>5} "
        f"{r.predicted_empty:5.1%} {r.worst_drop:5.3f} {_optional(r.worst_drop_gated):>5} {r.silent_folds:>6} "
        f"{r.minutes:5.1f}"
    )


def summary_lines(rows: list[SeedRow]) -> list[str]:
    """Median [min-max] of each column over the seeds, and the issue's targets counted."""

    def spread(values: list[float], fmt: str = "{:.4f}") -> str:
        return f"median {fmt.format(np.median(values))}, range {fmt.format(min(values))} to {fmt.format(max(values))}"

    n = len(rows)
    lines = [
        f"raw OOF - all-empty   {spread([r.raw_oof - r.cv_empty for r in rows], '{:+.4f}')}   "
        f"beats all-empty in {sum(r.raw_oof > r.cv_empty for r in rows)}/{n}",
        f"OOF + pp              {spread([r.cv_pp for r in rows])}",
        f"held-out test         {spread([r.test for r in rows])}",
        f"test - all-empty      {spread([r.test - r.test_empty for r in rows], '{:+.4f}')}   "
        f">= +0.05 in {sum(r.test - r.test_empty >= 0.05 for r in rows)}/{n}",
        f"ensemble gain         {spread([r.gain for r in rows], '{:+.4f}')}   (the PI is centred on OOF + pp + it)",
        f"gap (test - expected) {spread([r.gap for r in rows], '{:+.4f}')}   "
        f"test inside the 95 % PI in {sum(r.inside_pi for r in rows)}/{n}",
        f"predicted empty       {spread([r.predicted_empty for r in rows], '{:.1%}')}",
        f"worst fold late drop  {spread([r.worst_drop for r in rows], '{:.3f}')}   "
        f"<= 0.10 in {sum(r.worst_drop <= 0.10 for r in rows)}/{n}   (val_dice: the mask head alone)",
        f"silent folds          {sum(r.silent_folds for r in rows)} in {n} seeds   (val_dice never moved)",
        f"minutes               {spread([r.minutes for r in rows], '{:.1f}')}",
    ]
    gated = [r.worst_drop_gated for r in rows if r.worst_drop_gated is not None]
    if gated:  # a presence head: the curve of the model as it ships
        lines.insert(
            -2, f"  gated by presence   {spread(gated, '{:.3f}')}   <= 0.10 in {sum(d <= 0.10 for d in gated)}/{n}"
        )
    return lines


def run_seed(root: Path, seed: int, args: argparse.Namespace, test_subjects: int) -> SeedRow:
    config = load_config(
        args.config, folds=args.folds, seed=seed, predict_subjects=test_subjects, **args.overrides
    ).replace(name=f"{args.config.stem}_seed{seed}")
    outcome = cv_then_submit(root, config, experiment="demo_seeds")
    m, sub, curves = outcome.metrics, outcome.submission, list(outcome.fold_curves.values())
    return SeedRow(
        seed=seed,
        raw_oof=m[names.OOF_SCORE],
        cv_empty=m[names.EMPTY_BASELINE_SCORE],
        cv_pp=m[names.OOF_SCORE_POSTPROCESSED],
        ci_low=m[names.OOF_SCORE_POSTPROCESSED_CI_LOW],
        ci_high=m[names.OOF_SCORE_POSTPROCESSED_CI_HIGH],
        pi_low=m[names.OOF_SCORE_POSTPROCESSED_PI_LOW],
        pi_high=m[names.OOF_SCORE_POSTPROCESSED_PI_HIGH],
        gain=m.get(names.ENSEMBLE_GAIN, 0.0),
        test=sub.test_score,
        test_ci_low=sub.test_interval.low,
        test_ci_high=sub.test_interval.high,
        test_empty=outcome.test_empty,
        predicted_empty=sub.empty_share,
        worst_drop=max(c.drop for c in curves),
        worst_drop_gated=max((c.drop_gated for c in curves if c.drop_gated is not None), default=None),
        silent_folds=sum(c.silent for c in curves),
        minutes=outcome.minutes,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    test_subjects = -(-args.test // args.images)  # the generator gives each test subject `images` frames
    print(
        f"demo protocol over seeds {args.seeds}: {args.config.name} {' '.join(args.set)}, {args.subjects} subjects "
        f"x {args.images} images ({args.style}), {args.test} test images ({test_subjects} subjects), "
        f"data seed {args.data_seed}, "
        f"{args.folds} folds; machine: {cpu_description()}",
        flush=True,
    )
    rows: list[SeedRow] = []
    with contextlib.ExitStack() as stack:
        root = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="demo-seeds-")))
        root.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        generate(
            root / "raw", args.subjects, args.images, args.test, args.data_seed,
            test_masks_dir=root / "masks", progress=False, style=args.style,
        )  # fmt: skip
        print(f"data generated in {time.perf_counter() - started:.0f} s", flush=True)
        print(HEADER, flush=True)
        for seed in args.seeds:
            rows.append(run_seed(root, seed, args, test_subjects))
            print(row(rows[-1]), flush=True)
    print()
    print("\n".join(summary_lines(rows)))
    print(f"machine: {cpu_description()}")
    if args.out is not None:
        payload = [{**asdict(r), "gap": r.gap, "inside_pi": r.inside_pi} for r in rows]
        document = {"machine": cpu_description(), "args": {k: str(v) for k, v in vars(args).items()}, "rows": payload}
        atomic_write_text(args.out, json.dumps(document))
        print(f"rows written to {args.out}")


if __name__ == "__main__":
    main()
