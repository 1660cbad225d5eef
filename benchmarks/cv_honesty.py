"""Does the CV score predict the held-out score? CV vs held-out subjects on several synthetic data sets.

For each data set (its own generator seed, held-out test subjects) and each checkpoint rule, this runs
exactly what a user runs: ``run_cv`` (cv_train's code path, a temporary SQLite MLflow store), then
``make_submission`` (submit.py's code path) scored against the test masks. It prints, per case, the
CV estimate a user would bet on (the cross-fitted post-processed OOF score and its subject-bootstrap
95 % interval, as cv_train prints them), the held-out score, their gap, and whether the held-out score
lies inside the interval; then the mean gap per rule side by side. Targets (default rule): mean |gap|
<= 0.02, held-out inside the interval in >= 9 of 10 cases.

    .venv/bin/python benchmarks/cv_honesty.py                 # 10 data sets x 3 rules (see below for time)
    .venv/bin/python benchmarks/cv_honesty.py --small         # 1 data set x 3 rules
    .venv/bin/python benchmarks/cv_honesty.py --datasets 3 --rules last,best_val

Size: a case must train long enough for the model to beat predicting nothing, or every rule ends
at the all-empty score and the comparison says nothing: 10 subjects x 24 images with 8 epochs of
batch 16 (80 steps) learned nothing (fold scores 0.02-0.05, everything emptied by post-processing).
The defaults (12 subjects x 30 images, 3 folds, the config's 15 epochs at batch 8: ~450 steps per
fold) take about 4 minutes per case on a busy 2-core machine, so the full 30 cases take about two
hours there; ``--datasets`` trades cases for time.

|gap| has two noise sources besides any bias: the CV estimate's own (few subjects) and the test set's
(few test subjects). The mean SIGNED gap is the bias a checkpoint rule adds; it is printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from nerveseg import names
from nerveseg.config import CHECKPOINT_RULES, load_config
from nerveseg.data.synthetic import generate
from nerveseg.io_utils import atomic_write_text
from nerveseg.paths import PROJ_ROOT

DEMO_CONFIG = PROJ_ROOT / "experiments" / "demo.yaml"


@dataclass
class Case:
    """One data set x one checkpoint rule."""

    seed: int
    rule: str
    cv_score_mean: float  # raw OOF, threshold 0.5, mean of the folds
    cv_postprocessed: float  # cross-fitted post-processed OOF score: the estimate to bet on
    ci_low: float
    ci_high: float
    cv_postprocessed_insample: float  # post-processing decided and scored on all OOF (the old number)
    cv_empty: float
    test_score: float
    test_ci_low: float
    test_ci_high: float
    test_empty: float
    minutes: float

    @property
    def gap(self) -> float:
        return self.test_score - self.cv_postprocessed

    @property
    def inside(self) -> bool:
        return self.ci_low <= self.test_score <= self.ci_high


def _empty_test_score(masks_dir: Path) -> float:
    from nerveseg.data.raw import read_mask

    return float(np.mean([not read_mask(path).any() for path in sorted(masks_dir.glob("*_mask.tif"))]))


def run_case(root: Path, seed: int, rule: str, args: argparse.Namespace) -> Case:
    """cv_train then submit.py --test-masks on the data set under ``root``, tracked in ``root``'s store."""
    from nerveseg.track.cv_run import run_cv
    from nerveseg.track.store import MlflowSettings
    from nerveseg.track.submission_run import make_submission

    started = time.perf_counter()
    overrides = dict(item.split("=", 1) for item in args.set)
    config = load_config(
        args.config, checkpoint=rule, folds=args.folds, epochs=args.epochs, batch_size=args.batch_size, **overrides
    )
    config = config.replace(name=f"{config.name}_{rule}")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri  # make_submission reads the store from the environment
    os.environ["MLFLOW_EXPERIMENT_NAME"] = "cv_honesty"
    settings = MlflowSettings(uri, "cv_honesty", str(root / "mlartifacts"), source="cv_honesty.py")
    common = {"raw_dir": root / "raw", "cache_dir": root / "cache"}
    cv = run_cv(config, folds_dir=root / "folds", progress=False, settings=settings, **common)
    metrics = cv.final.metrics
    submission = make_submission(
        run_id=cv.parent_run_id, out_dir=root / "submissions", test_masks_dir=root / "masks", progress=False, **common
    )
    interval = submission.test_interval
    return Case(
        seed=seed,
        rule=rule,
        cv_score_mean=metrics[names.CV_SCORE_MEAN],
        cv_postprocessed=metrics[names.OOF_SCORE_POSTPROCESSED],
        ci_low=metrics.get(names.OOF_SCORE_POSTPROCESSED_CI_LOW, float("nan")),
        ci_high=metrics.get(names.OOF_SCORE_POSTPROCESSED_CI_HIGH, float("nan")),
        cv_postprocessed_insample=metrics[names.OOF_SCORE_POSTPROCESSED_INSAMPLE],
        cv_empty=metrics[names.EMPTY_BASELINE_SCORE],
        test_score=submission.test_score,
        test_ci_low=interval.low,
        test_ci_high=interval.high,
        test_empty=_empty_test_score(root / "masks"),
        minutes=(time.perf_counter() - started) / 60,
    )


HEADER = (
    f"{'seed':>5} {'rule':>8} {'CV raw':>7} {'CV+pp':>7} {'95 % CI':>13} {'insample':>8} {'empty':>6} "
    f"{'test':>7} {'test CI':>13} {'empty':>6} {'gap':>7} {'in CI':>5} {'min':>5}"
)


def row(case: Case) -> str:
    return (
        f"{case.seed:>5} {case.rule:>8} {case.cv_score_mean:7.4f} {case.cv_postprocessed:7.4f} "
        f"{case.ci_low:6.3f}-{case.ci_high:5.3f} {case.cv_postprocessed_insample:8.4f} {case.cv_empty:6.3f} "
        f"{case.test_score:7.4f} {case.test_ci_low:6.3f}-{case.test_ci_high:5.3f} {case.test_empty:6.3f} "
        f"{case.gap:+7.4f} {'yes' if case.inside else 'NO':>5} {case.minutes:5.1f}"
    )


def summary_lines(cases: list[Case], rules: list[str]) -> list[str]:
    lines = [f"{'rule':>8} {'cases':>5} {'mean gap':>9} {'mean |gap|':>10} {'in CI':>7} {'CV+pp - empty':>13}"]
    for rule in rules:
        mine = [c for c in cases if c.rule == rule]
        if not mine:
            continue
        gaps = np.array([c.gap for c in mine])
        inside = sum(c.inside for c in mine)
        margin = np.mean([c.cv_postprocessed - c.cv_empty for c in mine])
        lines.append(
            f"{rule:>8} {len(mine):>5} {gaps.mean():+9.4f} {np.abs(gaps).mean():10.4f} "
            f"{inside:>3}/{len(mine):<3} {margin:+13.4f}"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="1 data set (x the rules)")
    parser.add_argument("--datasets", type=int, default=None, help="data sets (generator seeds); default 10, 1 small")
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--rules", default=",".join(CHECKPOINT_RULES), help="checkpoint rules to compare")
    parser.add_argument("--subjects", type=int, default=12, help="training subjects per set")
    parser.add_argument("--images-per-subject", type=int, default=30)
    parser.add_argument("--test-subjects", type=int, default=8, help="held-out subjects per set")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="override the config's epochs")
    parser.add_argument("--batch-size", type=int, default=8, help="override the config's batch size (8)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", type=Path, default=None, help="also write the cases as JSON here")
    args = parser.parse_args()
    args.datasets = args.datasets or (1 if args.small else 10)
    return args


def main() -> None:
    args = parse_args()
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    print(
        f"{args.datasets} data sets x rules {rules}: {args.subjects} subjects x {args.images_per_subject} images, "
        f"{args.test_subjects} test subjects, {args.folds} folds, epochs {args.epochs or 'of the config'}, "
        f"batch {args.batch_size}, config {args.config.name} "
        f"{' '.join(args.set)}",
        flush=True,
    )
    print(HEADER, flush=True)
    cases: list[Case] = []
    for seed in range(args.first_seed, args.first_seed + args.datasets):
        with tempfile.TemporaryDirectory(prefix="cv-honesty-") as tmp:
            root = Path(tmp)
            test = args.test_subjects * args.images_per_subject
            generate(
                root / "raw", args.subjects, args.images_per_subject, test, seed,
                test_masks_dir=root / "masks", progress=False,
            )  # fmt: skip
            for rule in rules:
                cases.append(run_case(root, seed, rule, args))
                print(row(cases[-1]), flush=True)
    print()
    print("\n".join(summary_lines(cases, rules)))
    if args.out is not None:
        payload = [{**asdict(c), "gap": c.gap, "inside": c.inside} for c in cases]
        atomic_write_text(args.out, json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cases": payload}))
        print(f"cases written to {args.out}")


if __name__ == "__main__":
    main()
