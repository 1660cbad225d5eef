"""Is B really better than A? ``python src/compare.py A B [C ...]``: finished CV runs compared pairwise with A.

Each argument is an MLflow CV (parent) run id or a LocalStore folder. The runs must share the data and the fold
split (one line and exit 2 otherwise; ``--allow-different-folds`` compares subject means instead). For every run
after A it prints the paired difference of the per-image cross-fitted post-processed OOF score (nerve; ISBI: the
per-slice Rand error), its subject-bootstrap 95 % interval, the share of draws in which that run is better, how
many subjects improved, worsened or stayed, and a verdict: better, worse, or no detectable difference at this
data size, with the smallest difference the data could detect. The comparison is logged as an MLflow run of its
own (linked to the runs, with the plot of per-subject differences) unless ``--no-track``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nerveseg.cli import ArgumentParser, one_line_errors
from nerveseg.errors import NervesegError
from nerveseg.logs import quiet_tensorflow


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    first, rest = __doc__.split("\n\n", 1)
    parser = ArgumentParser(description=first, epilog=rest, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("runs", nargs="+", metavar="RUN", help="MLflow CV run ids or LocalStore folders; A first")
    parser.add_argument(
        "--allow-different-folds",
        action="store_true",
        help="compare runs on different fold splits (e.g. two seeds) by their subject means, with a warning",
    )
    parser.add_argument("--no-track", action="store_true", help="print only; log no comparison run in MLflow")
    parser.add_argument("--plot", type=Path, help="also write the per-subject differences plot to this NEW .png file")
    parser.add_argument("--per-subject", action="store_true", help="also print each subject's mean score per run")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap draws (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default: %(default)s)")
    return parser.parse_args(argv)


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.plot is not None and (args.plot.exists() or args.plot.suffix.lower() != ".png"):
        raise NervesegError(f"--plot {args.plot} must be a new .png file; nothing is overwritten, pass a new name")
    quiet_tensorflow(import_now=False)  # no TensorFlow here; MLflow's download bars off
    from nerveseg.run.comparison import compare_runs, format_comparison, format_subject_table, plot_comparison
    from nerveseg.track.run_reader import open_run
    from nerveseg.track.store import load_mlflow_settings, ui_hint

    settings = load_mlflow_settings()
    readers = [open_run(name, settings.tracking_uri) for name in args.runs]
    comparison = compare_runs(
        readers, allow_different_folds=args.allow_different_folds, resamples=args.resamples, seed=args.seed
    )
    print(format_comparison(comparison))
    if args.per_subject:
        print("\n" + format_subject_table(comparison))
    if args.plot is not None:
        print(f"plot: {plot_comparison(comparison, args.plot, new=True)}")
    if not args.no_track:
        from nerveseg.track.comparison_run import log_comparison

        run_id, experiment_id = log_comparison(comparison, readers, settings)
        print(f"comparison run: {run_id}")
        print(ui_hint(settings, experiment_id, run_id, "comparison run"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
