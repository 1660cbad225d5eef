"""``make clean-demo``'s MLflow part: ``python scripts/clean_demo.py EXPERIMENT`` deletes the demo's experiment.

Its runs are never chosen again and the next ``make demo`` starts a new experiment of that name
(``track.store.retire_experiment``). The experiment that ``mlflow.yml`` names, the one the real runs go to, is
refused, whatever ``MLFLOW_EXPERIMENT_NAME`` says.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from nerveseg.cli import one_line_errors
from nerveseg.errors import NervesegError


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="the demo's MLflow experiment (the Makefile's DEMO_EXPERIMENT)")
    args = parser.parse_args(argv)
    from nerveseg.track.store import load_mlflow_settings, retire_experiment

    os.environ.pop("MLFLOW_EXPERIMENT_NAME", None)  # the experiment to protect is mlflow.yml's
    settings = load_mlflow_settings()
    if args.experiment == settings.experiment_name:
        raise NervesegError(
            f"{args.experiment!r} is the experiment mlflow.yml names, where the real runs go; the demo's must differ"
        )
    retired = retire_experiment(args.experiment, settings)
    if retired is None:
        print(f"no MLflow experiment {args.experiment!r} to delete")
    else:
        name, experiment_id = retired
        print(
            f"deleted MLflow experiment {args.experiment!r} (id {experiment_id}, renamed {name!r}): its runs are no "
            f"longer shown or chosen; their files stay until `mlflow gc --experiment-ids {experiment_id} ...`"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
