"""Throughput of the submission path on the full-size workload, without MLflow.

Kaggle's test set has 5508 images; the reference ensemble is 5 fold models x 2 views (identity and
horizontal flip) of the baseline U-Net (64x80, 32..512 filters). Random weights are fine for timing.
Stages timed separately:

- prepare: decode + validate + resize the test TIFFs (nerveseg.data.cache.prepare_test, cold cache),
- predict: nerveseg.inference.ensemble.predict_ensemble (the model; includes scaling, flips, averaging),
- write:   full-resolution resize, post-processing, RLE, RLE round-trip proof, CSV, validation
           (nerveseg.submit.submission_file.postprocess_and_write),
- decide:  the post-processing search on ``--decide-images`` synthetic OOF images (not part of a
           submission: cv_train does it once per CV run; reported for reference).

The target is < 10 % of the submission's wall time outside the model (prepare + write).

Synthetic test images come from nerveseg.data.synthetic.generate, cached under
``data/processed/benchmarks/``; to save generation time only ``--unique`` distinct images are
rendered and copied (real file copies, so every read and decode is real) up to ``--images``.

    python benchmarks/submit_throughput.py                      # full size: 5508 images, 5 folds x 2 flips
    python benchmarks/submit_throughput.py --images 1000        # smaller; scale the numbers linearly
    python benchmarks/submit_throughput.py --test-dir data/raw  # a Kaggle layout with test/ instead
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from nerveseg.paths import PROCESSED_DIR


def synthetic_test_dir(images: int, unique: int, seed: int, cache_root: Path) -> Path:
    """A Kaggle layout with ``images`` test TIFFs (``unique`` rendered, the rest copies), cached."""
    from nerveseg.data.synthetic import generate

    root = cache_root / f"submit_test_{images}_u{unique}_s{seed}"
    if (root / "raw" / "test").is_dir() and len(list((root / "raw" / "test").glob("*.tif"))) == images:
        return root / "raw"
    shutil.rmtree(root, ignore_errors=True)
    unique = max(1, min(unique, images))
    started = time.perf_counter()
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    generate(work / "raw", subjects=1, images_per_subject=1, test=unique, seed=seed, test_masks_dir=work / "masks")
    test = work / "raw" / "test"
    for image_id in range(unique + 1, images + 1):
        shutil.copyfile(test / f"{(image_id - 1) % unique + 1}.tif", test / f"{image_id}.tif")
    os.replace(work, root)
    print(
        f"generated {unique} synthetic test images (+{images - unique} copies) in {time.perf_counter() - started:.0f} s"
    )
    return root / "raw"


def synthetic_oof(n: int, seed: int, height: int = 64, width: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """OOF-like probabilities (blobs, noise, stray spots, 59 % empty truth) and full-resolution truth."""
    from nerveseg.evaluate.metrics import to_full_resolution

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    probs = np.empty((n, height, width), np.float32)
    truth_small = np.zeros((n, height, width), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(12, 45), rng.uniform(25, 60)
        ry, rx = rng.uniform(6, 10), rng.uniform(5, 9)
        r2 = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
        present = rng.random() > 0.59
        if present:
            truth_small[i] = r2 < 1
        blob = np.exp(-r2) * rng.uniform(0.3, 1.0)
        spot = np.exp(-(((yy - rng.uniform(0, height)) ** 2 + (xx - rng.uniform(0, width)) ** 2) / 4))
        probs[i] = np.clip(blob * (present or rng.random() < 0.3) + 0.6 * spot * (rng.random() < 0.3), 0, 1)
        probs[i] += rng.random((height, width)).astype(np.float32) * 0.05
    truth = (to_full_resolution(truth_small) > 0.5).astype(np.uint8)
    return np.clip(probs, 0, 1), truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5508, help="test images (Kaggle: 5508)")
    parser.add_argument("--unique", type=int, default=500, help="distinct synthetic images rendered (rest copied)")
    parser.add_argument("--test-dir", type=Path, default=None, help="a raw dir with test/ to use instead")
    parser.add_argument("--folds", type=int, default=5, help="fold models in the ensemble (5)")
    parser.add_argument("--no-tta", action="store_true", help="no horizontal-flip TTA")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--decide-images", type=int, default=1000, help="OOF images for the post-processing search")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--cache-root", type=Path, default=PROCESSED_DIR / "benchmarks")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    from nerveseg.config import TrainConfig
    from nerveseg.data.cache import prepare_test
    from nerveseg.evaluate.postprocess import decide_postprocessing
    from nerveseg.inference.ensemble import predict_ensemble
    from nerveseg.model.unet import build_model_from_config, model_flops_per_image, set_standardization
    from nerveseg.submit.submission_file import postprocess_and_write

    raw_dir = args.test_dir or synthetic_test_dir(args.images, args.unique, args.seed, args.cache_root)
    config = TrainConfig(name="baseline")
    tta = not args.no_tta
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="submit-bench-") as tmp:
        started = time.perf_counter()
        test = prepare_test(raw_dir, Path(tmp) / "cache", config.height, config.width)  # cold cache: real decoding
        timings["prepare"] = time.perf_counter() - started

        started = time.perf_counter()
        models = []
        import keras

        for fold in range(args.folds):
            keras.utils.set_random_seed(args.seed + fold)
            model = build_model_from_config(config)
            set_standardization(model, 0.39, 0.22)
            models.append(model)
        timings["build_models"] = time.perf_counter() - started

        started = time.perf_counter()
        probs, presence = predict_ensemble(models, test.images, tta=tta, batch_size=args.batch_size)
        timings["predict"] = time.perf_counter() - started

        # the most expensive post-processing: largest component on every image plus a minimum area
        settings = {"threshold": 0.5, "largest_component": True, "min_area": 2000, "presence_threshold": None}
        started = time.perf_counter()
        stats = postprocess_and_write(test.ids, probs, settings, Path(tmp) / "submission.csv", presence)
        timings["write"] = time.perf_counter() - started
        write_parts = stats.seconds
        # Random weights give noisy probability maps (huge masks, thousands of RLE runs): a worst case.
        # A trained model gives blobs; time the same stage on OOF-like blob maps too.
        blobs, _ = synthetic_oof(len(test), args.seed + 1)
        started = time.perf_counter()
        blob_stats = postprocess_and_write(test.ids, blobs, settings, Path(tmp) / "submission_blobs.csv")
        timings["write_blobs"] = time.perf_counter() - started

    oof, truth = synthetic_oof(args.decide_images, args.seed)
    started = time.perf_counter()
    decided = decide_postprocessing(oof, truth)
    timings["decide"] = time.perf_counter() - started

    n = len(test)
    passes = args.folds * (2 if tta else 1)
    submission = timings["prepare"] + timings["predict"] + timings["write"]
    outside = timings["prepare"] + timings["write"]
    submission_blobs = timings["prepare"] + timings["predict"] + timings["write_blobs"]
    outside_blobs = timings["prepare"] + timings["write_blobs"]
    flops = model_flops_per_image(models[0]) * n * passes
    result = {
        "images": n,
        "model_passes_per_image": passes,
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "write_breakdown_seconds": {k: round(v, 2) for k, v in write_parts.items()},
        "write_blobs_breakdown_seconds": {k: round(v, 2) for k, v in blob_stats.seconds.items()},
        "submission_seconds": round(submission, 1),
        "images_per_second": round(n / submission, 2),
        "model_image_passes_per_second": round(n * passes / timings["predict"], 1),
        "model_gflops_per_second": round(flops / timings["predict"] / 1e9, 1),
        "share_outside_model_random_weights": round(outside / submission, 4),
        "share_outside_model_blob_maps": round(outside_blobs / submission_blobs, 4),
        "predicted_empty_share_random_weights": round(stats.empty_share, 3),
        "decide_images": args.decide_images,
        "decide_ms_per_image": round(timings["decide"] / args.decide_images * 1e3, 2),
        "decided": {
            k: decided.to_json()[k]
            for k in ("threshold", "largest_component", "min_area", "oof_score_raw", "oof_score")
        },
        "extrapolated_5508_images_seconds": round(submission / n * 5508, 0),
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=1))
    print(
        f"{n} images x {passes} model passes: {submission:.1f} s ({n / submission:.1f} images/s), "
        f"{outside / submission:.1%} outside the model with random weights, {outside_blobs / submission_blobs:.1%} "
        "on blob-like maps (target < 10 %); "
        f"post-processing search {result['decide_ms_per_image']} ms per OOF image"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
