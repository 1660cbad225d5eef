"""Register a CV run's fold ensemble in MLflow's model registry: ``python src/register.py [--run-id ID]``.

Logs the run's pyfunc model on it if it has none yet, registers a new version of ``--model-name`` (nerveseg)
with the run's CV table and honest estimate as its description and the data fingerprint and git commit
as tags, and moves ``--alias`` (champion) to it. Without ``--run-id`` it takes the best finished CV run
by the task's estimate, as ``submit.py`` ranks them (``run.choice``; their data is not compared). Then
``models:/nerveseg@champion`` works with ``predict.py``, ``submit.py --model`` and ``mlflow models serve``.

``--out MODEL_DIR`` writes the same model as a new folder instead of registering it; with ``--run-dir DIR`` (a
LocalStore folder, ``cv_train.py --run-dir``) no tracking store is read or created. Then
``predict.py --model MODEL_DIR`` and ``mlflow models serve -m MODEL_DIR --env-manager local`` use it.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from nerveseg.cli import (
    ArgumentParser,
    add_data_folders,
    add_registry_options,
    add_verbose,
    one_line_errors,
    registry_choice,
)
from nerveseg.errors import NervesegError
from nerveseg.logs import quiet_tensorflow


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--run-id", help="MLflow id of a CV (parent) run; default: the best finished one")
    which.add_argument("--run-dir", type=Path, help="a LocalStore CV folder (cv_train.py --run-dir); needs --out")
    parser.add_argument("--out", type=Path, help="write the model as this NEW folder instead of registering it")
    parser.add_argument("--task", help="without --run-id: the best run of this task (default: the newest run's)")
    add_registry_options(parser)
    parser.add_argument("--no-tta", action="store_true", help="the model predicts without the mirror TTA")
    add_data_folders(parser, "the training data, read only to decide a missing post-processing", folds=False)
    add_verbose(parser)
    return parser


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_dir is not None and args.out is None:
        raise NervesegError("--run-dir needs --out MODEL_DIR: a LocalStore run becomes a model folder, not a version")
    if args.out is not None and (args.model_name is not None or args.alias is not None):
        raise NervesegError("--out writes a model folder, not a registry version: drop --model-name and --alias")
    quiet_tensorflow(args.verbose)
    if args.out is not None:
        from nerveseg.run.package import check_new_model_dir, package_run
        from nerveseg.track.model_package import save_model_folder
        from nerveseg.track.run_reader import chosen_reader

        check_new_model_dir(args.out)  # before the run is read
        reader = chosen_reader(args.run_dir, args.run_id, args.task)
        save = partial(save_model_folder, tta=not args.no_tta)
        out = package_run(reader, args.out, save, raw_dir=args.raw_dir, cache_dir=args.cache_dir)
        print(f"wrote model folder {out}; use it with predict.py --model {out} or mlflow models serve -m {out}")
        return 0
    from nerveseg.track.registry import register_best

    registered = register_best(
        args.run_id, task=args.task, **registry_choice(args), tta=not args.no_tta,
        raw_dir=args.raw_dir, cache_dir=args.cache_dir,
    )  # fmt: skip
    print(registered.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
