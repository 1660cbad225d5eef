"""Cross-validate a config and track it in MLflow: python src/cv_train.py --config experiments/baseline.yaml

Any task (config field ``task``: nerve, isbi2012) runs through the same code. Prints the task's per-fold
table (nerve: Dice at 580x420, mean ± std, pooled OOF score, all-empty baseline on the same folds;
isbi2012: pixel error, V_rand / V_info errors, adapted Rand error per block fold), the parent run id and
how to open it in the MLflow UI. Folds can be spread over processes: ``--fold 0`` creates the parent run and
prints its id, ``--fold k --parent-run-id ID`` trains the others; whichever finishes last finalises the run.
``--resume`` continues an interrupted run. ``--run-dir DIR`` keeps the CV in a LocalStore folder instead of
MLflow (nothing of MLflow is imported or created; running the same command again continues it); submit, package
and serve it with ``submit.py --run-dir DIR`` and ``register.py --run-dir DIR --out MODEL_DIR``.

The table's 95 % PI is where a held-out set of m NEW subjects may score: m is ``--predict-subjects``,
else the subject count of ``--test-masks``' subjects.csv (the synthetic generator's), else one fold's worth.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerveseg.cli import (
    ArgumentParser,
    add_data_folders,
    add_registry_options,
    add_verbose,
    check_outside_raw,
    one_line_errors,
    registry_choice,
)
from nerveseg.config import load_config
from nerveseg.errors import NervesegError
from nerveseg.io_utils import check_outside
from nerveseg.logs import quiet_tensorflow
from nerveseg.paths import EXPERIMENTS_DIR


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--config", type=Path, default=EXPERIMENTS_DIR / "baseline.yaml", help="experiment YAML")
    parser.add_argument("--folds", type=int, help="number of folds (default: the config's, 5)")
    parser.add_argument("--fold", type=int, help="train only this fold (0-based), e.g. one per machine")
    parser.add_argument("--parent-run-id", help="join this unfinished parent run (with --fold or --resume)")
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="keep the CV in this folder (a LocalStore) instead of MLflow; an unfinished one is continued",
    )
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--seed", type=int, help="override the config's seed (it also picks the folds file)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="skip folds whose run FINISHED; without --parent-run-id continue the newest unfinished\n"
        "parent run of this config with identical params",
    )
    add_data_folders(parser)
    parser.add_argument(
        "--predict-subjects",
        type=int,
        help="the prediction interval is for a held-out set of this many new subjects (default: --test-masks'\n"
        "subject count, else the config's predict_subjects, 0 = as many as one fold holds)",
    )
    parser.add_argument(
        "--test-masks", type=Path, help="synthetic test masks folder: its subjects.csv sets --predict-subjects"
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="when the run is complete, register its fold ensemble (as src/register.py --run-id does)",
    )
    add_registry_options(parser)
    parser.add_argument("--no-progress", action="store_true", help="no fold or epoch progress, no ETA")
    add_verbose(parser)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def predict_subjects(args: argparse.Namespace) -> int | None:
    """m of the prediction interval: --predict-subjects, else the subjects in --test-masks' subjects.csv."""
    if args.predict_subjects is not None or args.test_masks is None:
        return args.predict_subjects
    from nerveseg.data.synthetic import TEST_SUBJECTS_FILE, read_test_subjects

    subject_of = read_test_subjects(args.test_masks)
    if not subject_of:
        raise NervesegError(
            f"--test-masks {args.test_masks} has no {TEST_SUBJECTS_FILE} (id,subject); "
            "pass --predict-subjects N instead"
        )
    return len(set(subject_of.values()))


def check_options(args: argparse.Namespace) -> None:
    """Options that would be accepted and then do nothing: the registry's without --register, MLflow's with
    --run-dir (which keeps the CV in a folder)."""
    if not args.register and (args.model_name is not None or args.alias is not None):
        raise NervesegError("--model-name and --alias say how --register registers it: add --register or drop them")
    if args.run_dir is None:
        return
    used = [name for name, on in (("--parent-run-id", args.parent_run_id), ("--resume", args.resume),
                                  ("--register", args.register)) if on]  # fmt: skip
    if used:
        raise NervesegError(
            f"--run-dir keeps the CV in a folder, without MLflow: drop {', '.join(used)} (a folder is continued by "
            "running the same command again; package it with register.py --run-dir DIR --out MODEL_DIR)"
        )


# NervesegError (bad input, an unreachable tracking store): one line, no traceback
@one_line_errors(interrupted="interrupted: the runs are marked KILLED; continue with --resume")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_options(args)
    progress = not args.no_progress
    check_outside_raw(args, "--cache-dir", "--folds-dir")
    if args.run_dir is not None:
        check_outside(args.run_dir, args.raw_dir, "--run-dir")
    config = load_config(
        args.config, folds=args.folds, epochs=args.epochs, seed=args.seed, predict_subjects=predict_subjects(args)
    )
    quiet_tensorflow(args.verbose)
    # imported only now, so that --help, argument and config errors answer without loading TensorFlow and MLflow
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths

    paths = CVPaths(args.raw_dir, args.cache_dir, args.folds_dir)
    if args.run_dir is not None:
        from nerveseg.run.local_store import LocalStore

        store = LocalStore(args.run_dir)
    else:
        from nerveseg.track.mlflow_store import MlflowStore

        store = MlflowStore(parent_run_id=args.parent_run_id, resume=args.resume, progress=progress)
    result = cross_validate(config, paths, store, fold=args.fold, progress=progress)
    if result.final is not None:
        print(result.final.table)
    else:
        print(f"trained folds {result.trained_folds}; the run is finalised when its last fold finishes")
    if args.run_dir is not None:
        print(f"run folder: {args.run_dir} (submit.py --run-dir, register.py --run-dir ... --out MODEL_DIR)")
        return 0
    from nerveseg.track.store import ui_hint

    print(f"parent run: {result.parent_id}")
    print(ui_hint(store.settings, store.experiment_id, result.parent_id))
    if args.register and result.final is not None:
        from nerveseg.track.registry import register_best

        registered = register_best(
            result.parent_id, **registry_choice(args), raw_dir=args.raw_dir, cache_dir=args.cache_dir
        )
        print(registered.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
