"""Block-fold CV of an ISBI 2012 config through ``run.cross_validate`` with a ``LocalStore`` (no MLflow):
per-fold and mean pixel error, V_rand and V_info errors (the challenge's), skimage's adapted Rand error,
training and prediction time.

    python benchmarks/isbi_cv.py --config experiments/isbi_unet.yaml --root ../shared/isbi2012
    python benchmarks/isbi_cv.py --config experiments/isbi_demo.yaml --root /tmp/em30 --only-folds 0
    python benchmarks/isbi_cv.py --config experiments/isbi_demo.yaml --root /tmp/em30 --submit /tmp/sub.tif

The CV is exactly cv_train's (same fold training, metrics and OOF-chosen post-processing), kept in ``--store``
(a temporary folder by default; an existing unfinished one is continued). Prediction time is that of the
held-out slices (no TTA) inside each fold, and with ``--submit`` that of the test stack with the fold ensemble
and 8-view TTA.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="ISBI data root (train/ and test/ or TIFF stacks)")
    parser.add_argument("--only-folds", type=int, nargs="*", help="train only these folds (timing); no CV summary")
    parser.add_argument("--submit", type=Path, help="also predict the test stack (ensemble + TTA) into this new TIFF")
    parser.add_argument("--store", type=Path, help="LocalStore folder (default: a temporary one)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from nerveseg.config import load_config
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.local_store import LocalStore
    from nerveseg.run.store import CVObserver, CVPaths

    class FoldTimer(CVObserver):
        """Prints each fold's score and wall time as it ends."""

        def __init__(self) -> None:
            self.started = time.perf_counter()

        def on_fold_end(self, fold: int, score: float) -> None:
            print(f"fold {fold}: v_rand_error {score:.4f}, {time.perf_counter() - self.started:.0f} s", flush=True)
            self.started = time.perf_counter()

    config = load_config(args.config, **dict(item.split("=", 1) for item in args.set))
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(args.store or Path(tmp) / config.name)
        paths = CVPaths(args.root, Path(tmp) / "cache", Path(tmp) / "folds", Path(tmp) / "work")
        print(f"{config.name}: model={config.model}, {config.folds} block folds, store {store.root}", flush=True)
        folds = args.only_folds if args.only_folds is not None else [None]
        for fold in folds:
            result = cross_validate(config, paths, store, [FoldTimer()], fold=fold, progress=False)
        if result.final is not None:
            print(result.final.table)
        if args.submit:
            submit(config, store, args.root, args.submit)


def submit(config, store, root: Path, path: Path) -> None:
    """The fold ensemble with 8-view TTA on the test stack, as submit.py predicts it."""
    from nerveseg import names
    from nerveseg.tasks.isbi2012.data import load_isbi
    from nerveseg.tasks.isbi2012.membranes import predict_isbi_ensemble
    from nerveseg.tasks.isbi2012.submission import write_probability_stack

    start = time.perf_counter()
    weights = [store.root / f"fold_{k}" / names.weights_artifact(k) for k in sorted(store.finished_folds())]
    probs = predict_isbi_ensemble(config, weights, load_isbi(root).test_images)
    written = write_probability_stack(probs, path, shape=None)
    print(f"wrote {written} {probs.shape} in {time.perf_counter() - start:.0f} s (ensemble of {len(weights)}, TTA)")


if __name__ == "__main__":
    main()
