"""How optimistic is a study's best score? A small study on synthetic data, then its best trial confirmed.

A study reports the best of many noisy CV estimates; picked as the maximum, that score is optimistic (the
winner's curse), the more so the more trials. This benchmark generates the demo's synthetic set (the Makefile's
DEMO_* sizes), runs an Optuna study of --trials trials of a config (experiments/demo.yaml) over a space where
the trials are equivalent (learning rate 0.75-1.33 times the config's, augmentation strength 0.8-1.2 times:
nothing that should move the score beyond noise), without pruning, and then `tune.py --confirm`'s
``confirm_study``: the best trial's config and the base config re-trained on a fresh fold split and seed. It
prints every trial, the selected score (the best trial's cv_score_mean), the confirmed score and their gap, the
trials' mean and spread, the paired comparison of best against base config, the minutes and the machine.
Everything is tracked in a SQLite MLflow store and Optuna storage of its own, in --work (kept) or a temporary
folder.

    .venv/bin/python benchmarks/winners_curse.py                  # 8 trials + 2 confirmations of the demo config
    .venv/bin/python benchmarks/winners_curse.py --trials 2 --subjects 6 --images 4 --folds 2 \
        --set epochs=2 --set height=32 --set width=40 --set depth=2 --set base_filters=4   # a smoke run, minutes
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo_seeds import DEMO_CONFIG, finish_demo_args
from nerveseg import names
from nerveseg.cli import one_line_errors
from nerveseg.config import TrainConfig, load_config
from nerveseg.io_utils import atomic_create_text
from nerveseg.logs import quiet_tensorflow
from nerveseg.provenance import cpu_description
from nerveseg.tune.search_space import SearchSpace, parse_search_space

STUDY = "winners-curse"
EXPERIMENT = "winners_curse"
LR_FACTOR = 0.75  # the learning rate is searched in [lr * 0.75, lr / 0.75]
AUGMENT_FACTORS = (0.8, 1.2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--trials", type=int, default=8, help="trials of the study (default: %(default)s)")
    parser.add_argument("--config", type=Path, default=DEMO_CONFIG, help="the study's base config (demo.yaml)")
    parser.add_argument("--folds", type=int, default=5, help="CV folds (default: %(default)s, as make demo)")
    parser.add_argument("--subjects", type=int, help="training subjects (default: the Makefile's DEMO_SUBJECTS)")
    parser.add_argument("--images", type=int, help="images per subject (default: DEMO_IMAGES)")
    parser.add_argument("--data-seed", type=int, help="generator seed (default: DEMO_SEED)")
    parser.add_argument("--sampler-seed", type=int, default=0, help="the TPE sampler's seed (default: 0)")
    parser.add_argument("--confirm-seed", type=int, help="the fresh seed (default: the config's seed + 1000)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--work", type=Path, help="keep the data, stores and runs in this NEW folder")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON to this NEW file")
    args = parser.parse_args(argv)
    finish_demo_args(parser, args, ("subjects", "images", "data_seed"), positive=("trials", "subjects", "images"))
    for path, option in ((args.work, "--work"), (args.out, "--out")):
        if path is not None and path.exists():
            parser.error(f"{option} {path} exists; nothing is overwritten, pass a new path")
    return args


def equivalent_space(base: TrainConfig) -> SearchSpace:
    """Learning rate and augmentation strength close to the base config's: trials that differ only by noise."""
    lr = base.learning_rate
    params = {"learning_rate": {"type": "float", "low": lr * LR_FACTOR, "high": lr / LR_FACTOR, "log": True}}
    if base.augment_strength > 0:
        low, high = (base.augment_strength * factor for factor in AUGMENT_FACTORS)
        params["augment_strength"] = {"type": "float", "low": low, "high": min(high, 5.0)}
    return parse_search_space(params, source="winners_curse.py: equivalent trials")


def run(args: argparse.Namespace, work: Path) -> dict[str, object]:
    """Generate the data, run the study, confirm its best trial; returns the numbers."""
    from nerveseg.data.synthetic import generate
    from nerveseg.tune.confirm import ConfirmSettings, confirm_study
    from nerveseg.tune.objective import make_pruner
    from nerveseg.tune.study import TuneSettings, run_study
    from nerveseg.tune.study_output import quiet_optuna

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = EXPERIMENT
    base = load_config(args.config, folds=args.folds, **args.overrides)
    space = equivalent_space(base)
    started = time.perf_counter()
    generate(
        work / "raw", args.subjects, args.images, 1, args.data_seed,
        test_masks_dir=work / "masks", progress=False, style=args.style,
    )  # fmt: skip
    dirs = {"raw_dir": work / "raw", "cache_dir": work / "cache", "folds_dir": work / "folds"}
    storage = f"sqlite:///{work / 'optuna.db'}"
    settings = TuneSettings(STUDY, args.trials, base, space, storage, **dirs, pruner=make_pruner("none"),
                            seed=args.sampler_seed, experiments_dir=work / "experiments", progress=False)  # fmt: skip
    with quiet_optuna():
        study = run_study(settings, out=lambda line: print(line, flush=True))
        confirm = ConfirmSettings(STUDY, storage, **dirs, seed=args.confirm_seed, progress=False)
        result = confirm_study(confirm, out=lambda line: print(line, flush=True))
    import optuna

    values = [t.value for t in optuna.load_study(study_name=STUDY, storage=storage).trials if t.value is not None]
    diff = result.comparison.differences[0]
    return {
        "objective": result.objective,
        "trials": values,
        "selected": result.selected[result.objective],
        "confirmed": result.confirmed[result.objective],
        "gap": result.gap,
        "selected_minus_mean": result.selected[result.objective] - statistics.fmean(values),
        "baseline_confirmed": result.baseline[result.objective],
        "selected_pp": result.selected.get(names.OOF_SCORE_POSTPROCESSED),
        "confirmed_pp": result.confirmed.get(names.OOF_SCORE_POSTPROCESSED),
        "best_vs_base": {"difference": diff.difference, "low": diff.low, "high": diff.high, "verdict": diff.verdict},
        "report": result.describe(),
        "study_run_id": study.study_run_id,
        "minutes": (time.perf_counter() - started) / 60,
    }


def summary_lines(numbers: dict[str, object], trials: int) -> list[str]:
    values = numbers["trials"]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return [
        numbers["report"],
        "",
        f"{numbers['objective']} of the {len(values)} complete trials: mean {statistics.fmean(values):.4f} "
        f"± {spread:.4f} (std), min {min(values):.4f}, max {max(values):.4f}",
        f"selected   {numbers['selected']:.4f}   (the best of {trials} trials, as the study reports it)",
        f"confirmed  {numbers['confirmed']:.4f}   (its config on a fresh fold split and training seed)",
        f"gap        {numbers['gap']:+.4f}   (confirmed - selected; selected - the trials' mean: "
        f"{numbers['selected_minus_mean']:+.4f})",
        f"minutes    {numbers['minutes']:.1f}",
    ]


@one_line_errors()
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_tensorflow()
    print(
        f"winner's curse: {args.trials} trials of {args.config.name} {' '.join(args.set)} (learning rate "
        f"{LR_FACTOR}-{1 / LR_FACTOR:.2f}x, augmentation strength {AUGMENT_FACTORS[0]}-{AUGMENT_FACTORS[1]}x), "
        f"{args.subjects} subjects x {args.images} images, {args.folds} folds; machine: {cpu_description()}",
        flush=True,
    )
    if args.work is not None:
        args.work.mkdir(parents=True)
        numbers = run(args, args.work)
    else:
        with tempfile.TemporaryDirectory(prefix="winners-curse-") as tmp:
            numbers = run(args, Path(tmp))
    print("\n".join(summary_lines(numbers, args.trials)))
    print(f"machine: {cpu_description()}")
    if args.out is not None:
        document = {"machine": cpu_description(), "args": {k: str(v) for k, v in vars(args).items()}, **numbers}
        atomic_create_text(args.out, json.dumps(document, indent=1))
        print(f"numbers written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
