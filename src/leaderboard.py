"""A submission's Kaggle leaderboard scores beside its CV estimate, and the trust-your-CV plot of all of them.

    python src/leaderboard.py --csv submissions/X.csv --public 0.68 --private 0.69    # typed in
    python src/leaderboard.py --from-kaggle                # read back with the Kaggle client (pip install kaggle)
    python src/leaderboard.py                              # only the table and the plot

The scores are logged as metrics of the submission's MLflow run (the one submit.py printed, or found from the
CSV's bytes), with the CV estimate's 95 % prediction interval sized for Kaggle's test set: 5,508 images, assumed
to be about 46 subjects of 120 frames each like the training set (--test-subjects sets another count). Every
recorded submission of the experiment is then printed as a table and drawn (x: CV estimate, its interval as a bar,
y: leaderboard score, y = x dotted) into --plot and onto the experiment's "leaderboard" MLflow run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.io_utils import check_outside, check_writable_dir
from nerveseg.paths import RAW_DIR, SUBMISSIONS_DIR

PLOT = SUBMISSIONS_DIR / "trust_your_cv.png"


@one_line_errors()  # NervesegError (KaggleError, TrackingError...): one line, exit 2
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--submission-run-id", help="the MLflow submission run (submit.py prints its id)")
    which.add_argument("--csv", type=Path, help="the submission's CSV: its submission run is found by its bytes")
    parser.add_argument("--public", type=float, help="the public leaderboard score Kaggle shows")
    parser.add_argument("--private", type=float, help="the private leaderboard score Kaggle shows")
    parser.add_argument(
        "--from-kaggle",
        action="store_true",
        help="read the scores with `kaggle competitions submissions` (the chosen submission, or every one\n"
        "uploaded with submit.py --kaggle), matched by file name or message",
    )
    parser.add_argument(
        "--test-subjects",
        type=int,
        default=0,
        help="size the interval for this many test subjects (default: the test images at the training set's\n"
        "frames per subject: 46 for Kaggle's 5,508)",
    )
    parser.add_argument("--plot", type=Path, default=PLOT, help=f"the PNG written, replaced each time ({PLOT})")
    args = parser.parse_args(argv)
    check_outside(args.plot, RAW_DIR, "--plot")
    check_writable_dir(args.plot.parent, "--plot folder")
    from nerveseg.run.leaderboard import record_leaderboard
    from nerveseg.track.submission_run import MlflowSubmissions

    report = record_leaderboard(
        MlflowSubmissions.open,
        submission_run_id=args.submission_run_id,
        csv_path=args.csv,
        public=args.public,
        private=args.private,
        from_kaggle=args.from_kaggle,
        test_subjects=args.test_subjects,
        plot_path=args.plot,
    )
    for line in report.recorded:
        print(line)
    if not report.entries:
        print("no submission of this experiment has a leaderboard score yet; record one with --public/--private")
        return 0
    print(report.table)
    if report.plot_path is not None:
        print(f"wrote {report.plot_path} (also on the experiment's leaderboard run {report.leaderboard_run_id})")
    else:
        print("no plot: no recorded submission has both a CV estimate and a score")
    return 0


if __name__ == "__main__":
    sys.exit(main())
