"""Tune hyperparameters with Optuna; every trial is a full cross-validation run tracked in MLflow.

    python src/tune.py --study NAME --trials N [--config experiments/baseline.yaml]
        [--space experiments/search_space.yaml] [--storage sqlite:///experiments/optuna.db]
        [--folds K] [--timeout S] [--pruner median|wilcoxon|none] [--seed 42] [--confirm]
    python src/tune.py --study NAME --confirm [--confirm-seed S]

--trials is the study's TOTAL: re-running the command continues the same study until it holds N
trials (complete + pruned + failed), and several workers started with the same --study/--storage
(e.g. PostgreSQL) share the work and stop at exactly N together. The best config is written to
experiments/<study>-best.yaml, ready for `python src/cv_train.py --config`.

--confirm (after the trials, or alone on a finished study) re-trains the best trial's config on a
fresh fold split and training seed, and the study's base config beside it, then prints the confirmed
score beside the selected one (the best of many noisy estimates is optimistic: the winner's curse)
and the paired comparison of best against base config. The study's MLflow run records both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nerveseg.cli import ArgumentParser, add_data_folders, add_verbose, check_outside_raw, one_line_errors
from nerveseg.config import check_option_range
from nerveseg.errors import NervesegError
from nerveseg.logs import quiet_tensorflow
from nerveseg.paths import EXPERIMENTS_DIR

if TYPE_CHECKING:
    from nerveseg.config import TrainConfig
    from nerveseg.tune.search_space import SearchSpace

DEFAULT_CONFIG = EXPERIMENTS_DIR / "baseline.yaml"
DEFAULT_SPACE = EXPERIMENTS_DIR / "search_space.yaml"
INTERRUPTED_LINE = (
    "interrupted: the running trial is marked FAIL (interrupted, not counted in --trials) and its MLflow runs "
    "KILLED; run the same command again to continue the study"
)


def build_parser() -> argparse.ArgumentParser:
    from nerveseg.tune.study import DEFAULT_STORAGE

    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True, help="study name (also the MLflow study run's name)")
    parser.add_argument("--trials", type=int, help="total trials of the study, all workers together")
    parser.add_argument(
        "--confirm",
        action="store_true",
        help="re-train the best trial's config and the base config on a fresh fold split and seed; report the "
        "confirmed score beside the selected one",
    )
    parser.add_argument(
        "--confirm-seed",
        type=int,
        help="the fresh seed of --confirm (folds and training; default: the base config's seed + 1000)",
    )
    parser.add_argument(
        "--storage",
        default=DEFAULT_STORAGE,
        help="Optuna storage URL (default: %(default)s); postgresql://user:pw@host/db for several machines",
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="base experiment YAML whose keys the space overrides (default: experiments/baseline.yaml)",
    )
    parser.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="search space YAML (default: %(default)s)")
    parser.add_argument("--folds", type=int, default=None, help="override the base config's number of CV folds")
    parser.add_argument("--timeout", type=float, default=None, help="start no new trial after this many seconds")
    parser.add_argument(
        "--pruner",
        choices=["median", "wilcoxon", "none"],
        default="median",
        help="median: running mean vs. median of earlier trials per fold; wilcoxon: paired test of fold scores "
        "against the best trial; none: never prune",
    )
    parser.add_argument("--n-startup-trials", type=int, default=5, help="median pruner: trials before it prunes")
    parser.add_argument(
        "--n-warmup-steps", type=int, default=0, help="folds completed before a trial may be pruned (median)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="TPE sampler seed; worker k of a study (0, 1, ...) uses seed + k so workers do not repeat each other",
    )
    add_data_folders(parser)
    parser.add_argument(
        "--experiments-dir",
        type=Path,
        default=EXPERIMENTS_DIR,
        help="where <study>-best.yaml is written (default: experiments/)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="only the per-trial lines, no per-fold/epoch progress"
    )
    parser.add_argument(
        "--max-consecutive-failures",
        type=int,
        default=5,
        help="stop this worker after this many failed trials in a row (a broken setup, not bad luck)",
    )
    add_verbose(parser)
    return parser


@one_line_errors(interrupted=INTERRUPTED_LINE)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.trials is None and not args.confirm:
        raise NervesegError("pass --trials N (the study's total), --confirm (a finished study), or both")
    check_outside_raw(args, "--cache-dir", "--folds-dir", "--experiments-dir")
    if args.confirm_seed is not None:
        check_option_range("seed", args.confirm_seed, "--confirm-seed")
    study_inputs = None
    if args.trials is not None:
        from nerveseg.config import load_config
        from nerveseg.tune.search_space import load_search_space

        study_inputs = load_config(args.config, folds=args.folds), load_search_space(args.space)
    from nerveseg.tune.storage import check_storage_url, with_installed_driver

    check_storage_url(with_installed_driver(args.storage))  # a bogus --storage answers before TensorFlow loads
    if study_inputs is not None:
        run_trials(args, *study_inputs)
    if args.confirm:
        confirm(args)
    return 0


def confirm(args: argparse.Namespace) -> None:
    """``--confirm``: the best trial's config and the base config re-trained on a fresh split, compared."""
    quiet_tensorflow(args.verbose)
    from nerveseg.tune.confirm import ConfirmSettings, confirm_study
    from nerveseg.tune.study_output import quiet_optuna

    settings = ConfirmSettings(
        study_name=args.study, storage=args.storage, raw_dir=args.raw_dir, cache_dir=args.cache_dir,
        folds_dir=args.folds_dir, seed=args.confirm_seed, progress=not args.no_progress,
    )  # fmt: skip
    with quiet_optuna():
        result = confirm_study(settings, out=lambda line: print(line, flush=True))
    print(result.describe())


def run_trials(args: argparse.Namespace, base: TrainConfig, space: SearchSpace) -> None:
    """Run the study's trials until it holds ``--trials``; print its best trial and config."""
    quiet_tensorflow(args.verbose)  # after the checks above, which answer without loading TensorFlow
    from nerveseg.tune.objective import make_pruner
    from nerveseg.tune.study import TuneSettings, run_study
    from nerveseg.tune.study_output import quiet_optuna

    settings = TuneSettings(
        study_name=args.study,
        n_trials=args.trials,
        base_config=base,
        space=space,
        storage=args.storage,
        raw_dir=args.raw_dir,
        cache_dir=args.cache_dir,
        folds_dir=args.folds_dir,
        experiments_dir=args.experiments_dir,
        progress=not args.no_progress,
        timeout=args.timeout,
        pruner=make_pruner(args.pruner, n_startup_trials=args.n_startup_trials, n_warmup_steps=args.n_warmup_steps),
        seed=args.seed,
        max_consecutive_failures=args.max_consecutive_failures,
    )
    with quiet_optuna():
        result = run_study(settings, out=lambda line: print(line, flush=True))
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(result.states.items()))
    print(f"study {result.study_name}: {result.n_trials_total} trials ({states}); {result.ran_here} ran in this worker")
    if result.best_value is not None:
        print(f"best value {result.best_value:.4f} with {result.best_params}")
    if result.best_config_path is not None:
        print(f"best config: {result.best_config_path} (python src/cv_train.py --config {result.best_config_path})")
    print(f"MLflow study run: {result.study_run_id}")


if __name__ == "__main__":
    sys.exit(main())
