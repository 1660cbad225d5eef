"""Write a submission from tracked CV runs: ``python src/submit.py [--run-id ID | --runs ID1,ID2 | --model URI]``.

Without a run id it takes the best FINISHED cross-validation run of the experiment for ``--task``
(default: the task of the newest run trained on that data, else of the newest run) among those trained on the
data in ``--raw-dir`` (their data fingerprint; the others are listed as skipped), ranked by that task's
estimate (nerve: highest cross-fitted ``oof_score_postprocessed``, ``cv_score_mean`` for runs without it;
isbi2012: lowest ``cv_v_rand_error_mean``); ``--list`` shows them and exits. The
run's task writes the file: nerve a Kaggle CSV ``submissions/<UTC time>_<run name>.csv``, isbi2012 a
float32 TIFF stack ``.tif`` of membrane probabilities. Never overwritten; logged as a child run
"submission" of the CV run.

``--run-dir DIR`` submits from a LocalStore folder (``cv_train.py --run-dir``) with no MLflow tracking store:
the submission's params, metrics and post-processing are written as ``<submission file>.json`` beside it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nerveseg.cli import ArgumentParser, add_data_folders, add_verbose, check_outside_raw, one_line_errors
from nerveseg.errors import NervesegError
from nerveseg.io_utils import check_free_space, check_writable_dir
from nerveseg.logs import quiet_tensorflow
from nerveseg.paths import SUBMISSIONS_DIR
from nerveseg.tasks import get_task

if TYPE_CHECKING:
    from nerveseg.run.submit import SubmissionResult
    from nerveseg.track.submission_run import MlflowSubmissions


def expected_output_bytes(raw_dir: Path) -> int:
    """The largest submission any task can write of the test data under ``raw_dir`` (the task is known only later)."""
    from nerveseg.config import task_names
    from nerveseg.tasks import get_task

    return max(get_task(name).submission_bytes(raw_dir) for name in task_names())


@one_line_errors()  # NervesegError (DataError, ConfigError, TrackingError...): one line
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description="Predict the test data with CV run(s) and write a submission")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--run-id", help="MLflow id of a CV (parent) run; default: the best finished one trained on --raw-dir's data"
    )
    which.add_argument("--runs", help="comma-separated CV run ids to ensemble (equal weight per run)")
    which.add_argument("--model", help="a registered model, e.g. models:/nerveseg@champion: submit from its CV run")
    which.add_argument("--run-dir", type=Path, help="a LocalStore CV folder (cv_train.py --run-dir): no MLflow used")
    which.add_argument(
        "--list",
        action="store_true",
        help="show the finished CV runs the default choice picks from (estimate, data: --raw-dir's or other) and exit",
    )
    parser.add_argument(
        "--task", help="without --run-id: the best run of this task (nerve, isbi2012); default: the newest run's task"
    )
    parser.add_argument(
        "--no-tta", action="store_true", help="skip the test-time views (default: those of the run's OOF, config tta)"
    )
    add_data_folders(parser, folds=False)
    parser.add_argument("--out-dir", type=Path, default=SUBMISSIONS_DIR, help=f"where CSVs go ({SUBMISSIONS_DIR})")
    parser.add_argument("--batch-size", type=int, default=256, help="test images per prediction batch (256)")
    parser.add_argument("--test-masks", type=Path, default=None, help="folder of <id>_mask.tif: also log a test score")
    parser.add_argument(
        "--out-name",
        help="file name of the submission in --out-dir (default: <UTC time>_<run name>); never overwritten",
    )
    parser.add_argument(
        "--kaggle",
        action="store_true",
        help="then upload the file with the Kaggle client (pip install kaggle) and tag its submission run",
    )
    parser.add_argument(
        "--message", help="with --kaggle: the submission's description (default: the run and its CV estimate)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_verbose(parser)
    args = parser.parse_args(argv)
    if args.message is not None and not args.kaggle:
        raise NervesegError("--message is the Kaggle submission's description; add --kaggle to upload")
    if args.list:
        from nerveseg.run.choice import DataToMatch, list_candidates

        data = DataToMatch(args.raw_dir, args.cache_dir, not args.no_progress)
        print(list_candidates(_tracked_runs(), data, args.task))
        return 0
    check_outside_raw(args, "--out-dir", "--cache-dir")
    check_writable_dir(args.out_dir, "--out-dir")
    if args.out_name is not None and (args.out_dir / args.out_name).exists():
        raise NervesegError(
            f"--out-name: {args.out_dir / args.out_name} already exists; submissions are never overwritten"
        )
    quiet_tensorflow(args.verbose)
    check_free_space(args.out_dir, expected_output_bytes(args.raw_dir), "--out-dir")  # before any prediction

    run_ids = None
    if args.runs is not None:
        run_ids = [r.strip() for r in args.runs.split(",") if r.strip()]
        if not run_ids:
            raise NervesegError("--runs needs at least one run id (ID1,ID2,...)")
    from nerveseg.run.submit import make_submission

    result = make_submission(
        _tracked_runs,
        run_id=args.run_id,
        run_ids=run_ids,
        run_dir=args.run_dir,
        tta=False if args.no_tta else None,  # None: the views the run's out-of-fold predictions used
        raw_dir=args.raw_dir,
        out_dir=args.out_dir,
        cache_dir=args.cache_dir,
        batch_size=args.batch_size,
        test_masks_dir=args.test_masks,
        progress=not args.no_progress,
        task=args.task,
        file_name=args.out_name,
        model=args.model,
    )
    _print_result(result)
    if args.kaggle:
        _upload(result, args.message)
    return 0


def _upload(result: SubmissionResult, message: str | None) -> None:
    """``--kaggle``: the written file through the Kaggle client; tagged on its MLflow submission run when there is
    one. A failure is one line saying how to upload by hand (the file is kept), exit 2."""
    if not get_task(result.task).kaggle_submission:
        raise NervesegError(f"--kaggle uploads nerve CSVs to Kaggle; {result.csv_path} is a {result.task} submission")
    if result.record_path is None:  # recorded as an MLflow submission run
        from nerveseg.run.leaderboard import upload_and_record

        print(upload_and_record(_tracked_runs(), result, message))
        return
    from nerveseg.kaggle_client import submit
    from nerveseg.report.leaderboard import submission_message

    name = "+".join(Path(run_id).name for run_id in result.run_ids)  # LocalStore folders
    print(submit(result.csv_path, message if message is not None else submission_message(name, result.cv_prediction)))


def _tracked_runs() -> MlflowSubmissions:
    """The MLflow store's runs and submissions, imported only when used: ``--run-dir`` never imports MLflow."""
    from nerveseg.track.submission_run import MlflowSubmissions

    return MlflowSubmissions.open()


def _print_result(result: SubmissionResult) -> None:
    from nerveseg.run.submit import prediction_check

    print(f"post-processing ({result.postprocessing_source}): {result.postprocessing.describe()}")
    empty = "" if result.empty_share != result.empty_share else f", {result.empty_share:.1%} predicted empty"
    print(f"{result.task}: {result.n_images} test images{empty}")
    if result.test_interval is not None:
        print(f"local test score {result.test_interval.describe()}")
    elif result.test_score is not None:
        print(f"local test score {result.test_score:.4f}")
    if result.test_score is not None and result.cv_prediction is not None:
        print(prediction_check(result.test_score, result.test_interval, result.cv_prediction))
    print(f"wrote {result.csv_path}")
    if result.record_path is not None:
        print(f"wrote {result.record_path} (the submission's record: no tracking store was used)")
    else:
        print(f"MLflow submission run {result.submission_run_id} under {', '.join(result.run_ids)}")


if __name__ == "__main__":
    sys.exit(main())
