"""Benchmark: what pruning buys a study: trials per hour and best score, same time budget, with and without.

    .venv/bin/python benchmarks/tune_pruning.py [--budget 240] [--pruner median] [--folds 3] [--epochs 2]

The search space has deliberately bad regions: learning rates from 1e-7 to 1e-1 on a log scale,
so many proposals barely move the weights in a couple of epochs (and the largest may diverge). Each arm runs the
real ``tune.run_study`` (every trial a tracked ``cross_validate``) on a small synthetic set with a tiny
model, with its own temporary SQLite Optuna storage and MLflow store, for ``--budget`` seconds
(no trial starts after that; the running one finishes). The two arms run side by side, so they
share whatever else loads the machine, and use the same sampler seed, so they see the same first
proposals. One run per arm: on a shared CPU expect noise of +-20 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPACE = {
    "learning_rate": {"type": "float", "low": 1.0e-7, "high": 1.0e-1, "log": True},
    "base_filters": {"type": "categorical", "choices": [4, 8]},
}


def run_arm(name: str, pruner_name: str, args: argparse.Namespace) -> dict[str, float]:
    """One arm, in its own process: its own SQLite Optuna storage, MLflow store and cache."""
    import optuna

    from nerveseg.config import TrainConfig
    from nerveseg.tune.objective import make_pruner
    from nerveseg.tune.search_space import parse_search_space
    from nerveseg.tune.study import TuneSettings, run_study
    from nerveseg.tune.study_output import quiet_optuna

    work = Path(args.work)
    arm = work / name
    arm.mkdir()
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{arm / 'mlflow.db'}"
    os.environ["MLFLOW_EXPERIMENT_NAME"] = f"bench-{name}"
    base = TrainConfig(
        name="bench", height=32, width=40, depth=3, base_filters=4, learning_rate=1e-3, batch_size=8,
        epochs=args.epochs, folds=args.folds, seed=1,
    )  # fmt: skip
    settings = TuneSettings(
        study_name=f"bench-{name}",
        n_trials=10_000,  # the budget decides
        base_config=base,
        space=parse_search_space(SPACE, source="benchmark space"),
        storage=f"sqlite:///{arm / 'optuna.db'}",
        raw_dir=work / "data" / "raw",
        cache_dir=arm / "cache",
        folds_dir=arm / "folds",
        timeout=args.budget,
        # n_startup_trials=2: with a budget of a few trials, the default 5 would leave nothing to prune
        pruner=make_pruner(pruner_name, n_startup_trials=2),  # type: ignore[arg-type]
        seed=0,
        experiments_dir=arm,
        progress=False,
    )
    started = time.monotonic()
    with quiet_optuna():
        result = run_study(settings, out=lambda line: print(f"  [{name}] {line}", flush=True))
    elapsed = time.monotonic() - started
    trials = optuna.load_study(study_name=settings.study_name, storage=settings.storage).get_trials()

    def mean_seconds(state: str) -> float:
        durations = [t.duration.total_seconds() for t in trials if t.state.name == state and t.duration]
        return sum(durations) / len(durations) if durations else float("nan")

    return {
        "trials": len(trials),
        "complete": result.states.get("COMPLETE", 0),
        "pruned": result.states.get("PRUNED", 0),
        "failed": result.states.get("FAIL", 0),
        "elapsed_s": elapsed,
        "trials_per_hour": 3600 * len(trials) / elapsed,
        "folds_per_trial": sum(len(t.intermediate_values) for t in trials) / max(1, len(trials)),
        "s_per_complete": mean_seconds("COMPLETE"),
        "s_per_pruned": mean_seconds("PRUNED"),
        "best": float("nan") if result.best_value is None else result.best_value,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per arm (no new trial after that)")
    parser.add_argument("--pruner", choices=["median", "wilcoxon"], default="median")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--images-per-subject", type=int, default=10)
    parser.add_argument("--arm", help=argparse.SUPPRESS)  # internal: run one arm in this process
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.arm:
        result = run_arm(args.arm, args.arm, args)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from nerveseg.data.synthetic import generate

    arms = (args.pruner, "none")
    with tempfile.TemporaryDirectory(prefix="tune-bench-") as tmp:
        generate(Path(tmp) / "data" / "raw", args.subjects, args.images_per_subject, 1, seed=3, progress=False)
        # Both arms at once, so that they share whatever else loads the machine (one after the other,
        # a change of load between the arms would dominate the comparison).
        print(f"arms {', '.join(arms)} side by side, {args.budget:.0f} s budget each", flush=True)
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("arm", "work")]
        procs = {
            arm: subprocess.Popen(
                [sys.executable, __file__, *passthrough, f"--arm={arm}", f"--work={tmp}"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for arm in arms
        }
        results = {}
        for arm, proc in procs.items():
            out, _ = proc.communicate()
            lines = out.splitlines()
            print("\n".join(line for line in lines if not line.startswith("RESULT ")), flush=True)
            if proc.returncode != 0 or not lines or not lines[-1].startswith("RESULT "):
                raise SystemExit(f"arm {arm} failed (exit code {proc.returncode})")
            results[arm] = json.loads(lines[-1][len("RESULT ") :])

    print()
    print(
        f"{args.subjects * args.images_per_subject} synthetic images, 32x40, depth 3, {args.folds} folds x "
        f"{args.epochs} epochs, budget {args.budget:.0f} s per arm (arms run side by side), "
        "space: lr 1e-7..1e-1 (log), base_filters 4|8"
    )
    header = f"{'pruner':<8}{'trials':>7}{'compl.':>7}{'pruned':>7}{'failed':>7}{'time s':>8}{'trials/h':>9}"
    print(header + f"{'folds/trial':>12}{'s/compl.':>9}{'s/pruned':>9}{'best':>8}")
    for name, r in results.items():
        print(
            f"{name:<8}{r['trials']:>7}{r['complete']:>7}{r['pruned']:>7}{r['failed']:>7}{r['elapsed_s']:>8.0f}"
            f"{r['trials_per_hour']:>9.0f}{r['folds_per_trial']:>12.2f}{r['s_per_complete']:>9.1f}"
            f"{r['s_per_pruned']:>9.1f}{r['best']:>8.4f}"
        )


if __name__ == "__main__":
    main()
