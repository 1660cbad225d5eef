"""Block-fold CV of an ISBI 2012 config through nerveseg.train.isbi_fold (no MLflow): per-fold and mean
pixel error, Rand error, VI, training and prediction time.

    python benchmarks/isbi_cv.py --config experiments/isbi_unet.yaml --root ../shared/isbi2012
    python benchmarks/isbi_cv.py --config experiments/isbi_demo.yaml --root /tmp/em30 --only-folds 0
    python benchmarks/isbi_cv.py --config experiments/isbi_demo.yaml --root /tmp/em30 --submit /tmp/sub.tif

Prediction time is that of the held-out slices (no TTA) inside each fold, and with ``--submit``
that of the test stack with the fold ensemble and 8-view TTA. Weights go to a temporary folder.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True, help="ISBI data root (train/ and test/ or TIFF stacks)")
    parser.add_argument("--only-folds", type=int, nargs="*", help="train only these folds (timing); no CV summary")
    parser.add_argument("--submit", type=Path, help="also predict the test stack (ensemble + TTA) into this new TIFF")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = parser.parse_args()

    import numpy as np

    from nerveseg.config import load_config
    from nerveseg.data.isbi import block_folds, load_isbi
    from nerveseg.evaluate.membrane_metrics import membrane_scores
    from nerveseg.submit.tiff_stack import write_probability_stack
    from nerveseg.train.isbi_fold import (
        apply_membrane_postprocess,
        decide_isbi_postprocessing,
        format_isbi_table,
        isbi_oof_summary,
        predict_isbi_ensemble,
        train_isbi_fold,
    )

    config = load_config(args.config, **dict(item.split("=", 1) for item in args.set))
    data = load_isbi(args.root)
    folds = block_folds(len(data.images), config.folds)
    shape = data.images.shape
    print(f"{config.name}: model={config.model}, {shape[0]} slices {shape[1:]}, {config.folds} folds")
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for fold in args.only_folds if args.only_folds is not None else range(config.folds):
            start = time.perf_counter()
            result = train_isbi_fold(config, data, folds, fold, Path(workdir), verbose=0)
            elapsed = time.perf_counter() - start
            predict_start = time.perf_counter()
            predict_isbi_ensemble(config, [result.weights_path], data.images[result.val_index], tta=False)
            predict_s = time.perf_counter() - predict_start
            results.append(result)
            print(
                f"fold {fold}: rand_error@0.5 {result.val_score:.4f}, final loss {result.history['loss'][-1]:.4f}, "
                f"val_dice {result.history['val_dice'][-1]:.4f}, train+oof {elapsed:.0f} s, "
                f"predict {len(result.val_index)} slices {predict_s:.1f} s",
                flush=True,
            )
        if args.only_folds is None:
            metrics, oof = isbi_oof_summary(data, folds, results)
            print(format_isbi_table(metrics))
            start = time.perf_counter()
            settings = decide_isbi_postprocessing(oof, data.membranes)
            cleaned = apply_membrane_postprocess(oof, settings)
            chosen = membrane_scores(cleaned, data.membranes, settings.threshold).as_dict()
            print(
                f"post-processing chosen on OOF ({time.perf_counter() - start:.0f} s): {settings.to_json()} -> "
                + ", ".join(f"{name} {value:.4f}" for name, value in chosen.items())
            )
        if args.submit:
            start = time.perf_counter()
            probs = predict_isbi_ensemble(config, [r.weights_path for r in results], data.test_images)
            path = write_probability_stack(probs, args.submit, shape=None)
            elapsed = time.perf_counter() - start
            print(f"wrote {path} {probs.shape} in {elapsed:.0f} s (ensemble of {len(results)}, TTA)")
    print(f"membrane share in labels: {float(np.mean(data.membranes)):.3f}")


if __name__ == "__main__":
    main()
