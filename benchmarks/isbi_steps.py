"""The V_rand error against training steps, from one block-fold CV of an ISBI config (``benchmarks/isbi_cv.py``'s
path: ``run.cross_validate`` with a ``LocalStore``, no MLflow): each fold logs its held-out V_rand error (the
challenge's: after border thinning, best threshold of 0.0:0.1:1.0; ``tasks.isbi2012.challenge_metrics``) after every
epoch (``epoch_rand_error: true``, the per-epoch metric ``val_v_rand_error`` a tracked CV records too),
and this prints the mean over folds per epoch against the batches and crops seen, then the CV table.

    python benchmarks/isbi_steps.py --config experiments/isbi_unet.yaml --root ../shared/isbi2012
    python benchmarks/isbi_steps.py --config experiments/isbi_unet.yaml --root ../shared/isbi2012 \\
        --set epochs=30 --csv /tmp/isbi_steps.csv

Read it with care: epoch k of an N-epoch cosine schedule is not a k-epoch schedule (its learning rate
has not decayed yet), so the curve is a lower bound on what a run of k epochs would reach, and its
slope at the end says what more epochs of the same schedule would buy. For the honest point at a
given length run that length (``--set epochs=K``).

A CV already tracked by ``cv_train.py`` (with ``epoch_rand_error: true``) holds the same curve in its fold runs'
``val_v_rand_error`` histories: ``--run-id ID`` reads them from the MLflow store (``MLFLOW_TRACKING_URI``)
instead of training again (``--config`` and ``--root`` then only give the steps per epoch).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def rand_error_table(per_fold: dict[int, list[float]], steps_per_epoch: int, batch_size: int) -> list[dict]:
    """One row per epoch: batches and crops seen, each fold's held-out V_rand error, their mean."""
    epochs = min(len(values) for values in per_fold.values())
    rows = []
    for epoch in range(epochs):
        values = {f"fold_{fold}": per_fold[fold][epoch] for fold in sorted(per_fold)}
        steps = (epoch + 1) * steps_per_epoch
        mean = sum(values.values()) / len(values)
        rows.append({"epoch": epoch + 1, "steps": steps, "crops": steps * batch_size, **values, "mean": mean})
    return rows


def tracked_curves(run_id: str, metric: str) -> dict[int, list[float]]:
    """Each finished fold run's per-epoch ``metric`` of the tracked CV ``run_id``, in epoch order."""
    from nerveseg.track import run_reader
    from nerveseg.track.store import get_client

    client = get_client()
    parent = client.get_run(run_id)
    return {
        fold: [m.value for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.step)]
        for fold, run in sorted(run_reader.newest_finished_fold_runs(client, parent).items())
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="ISBI data root (train/ and test/ or TIFF stacks)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--csv", type=Path, help="also write the table to this NEW csv file")
    parser.add_argument("--run-id", help="a finished tracked CV (cv_train.py) to read the curve from, not train")
    args = parser.parse_args()
    if args.csv is not None and args.csv.exists():
        parser.error(f"--csv {args.csv} exists; pick a new name")

    from nerveseg.config import load_config
    from nerveseg.names import VAL_V_RAND_ERROR
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.local_store import LocalStore
    from nerveseg.run.store import CVObserver, CVPaths
    from nerveseg.tasks.isbi2012 import isbi_root
    from nerveseg.tasks.isbi2012.data import load_isbi
    from nerveseg.tasks.isbi2012.trainer import training_steps

    overrides = dict(item.split("=", 1) for item in args.set)
    config = load_config(args.config, **{**overrides, "epoch_rand_error": "true"})
    per_fold: dict[int, list[float]] = {}

    class Listen(CVObserver):
        def on_epoch_end(self, fold: int, epoch: int, logs) -> None:
            per_fold.setdefault(fold, []).append(float(logs[VAL_V_RAND_ERROR]))
            print(f"fold {fold} epoch {epoch + 1}: {VAL_V_RAND_ERROR} {logs[VAL_V_RAND_ERROR]:.4f}", flush=True)

    start = time.perf_counter()
    result = None
    if args.run_id is not None:
        per_fold.update(tracked_curves(args.run_id, VAL_V_RAND_ERROR))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            store = LocalStore(Path(tmp) / config.name)
            paths = CVPaths(args.root, Path(tmp) / "cache", Path(tmp) / "folds", Path(tmp) / "work")
            result = cross_validate(config, paths, store, [Listen()], progress=False)
    minutes = (time.perf_counter() - start) / 60
    data = load_isbi(isbi_root(args.root))
    n_train = len(data) - len(data) // config.folds  # block folds: held-out blocks differ by one slice at most
    steps = training_steps(config, n_train, *data.images.shape[1:])
    rows = rand_error_table(per_fold, steps, config.batch_size)
    print(f"\nheld-out V_rand error (best threshold, no TTA, no post-processing) per epoch; {minutes:.1f} min in all")
    print(" ".join(f"{key:>9}" for key in rows[0]))
    for row in rows:
        print(" ".join(f"{value:>9}" if isinstance(value, int) else f"{value:>9.4f}" for value in row.values()))
    if args.csv is not None:
        with open(args.csv, "x", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if result is not None and result.final is not None:
        print(result.final.table)


if __name__ == "__main__":
    main()
