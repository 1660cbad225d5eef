"""Naive sliding window vs exact dense inference of the patch CNN: pixels/s, same weights, one run.

    python benchmarks/sliding_window.py                 # 512x512 image, default N4-sized net
    python benchmarks/sliding_window.py --size 128      # quicker
    python benchmarks/sliding_window.py --window 95 --kernels 4 5 4 4   # Ciresan's N4 (95x95, four blocks)

The naive way classifies one window per pixel (every window extracted from the reflect-padded
image, classified in batches). Over a whole 512x512 image that takes minutes on a CPU, so it is
timed on ``--naive-pixels`` random pixels and reported as pixels/s (the script says so). The
dense pass (max-pooling fragments, Giusti et al. 2013) predicts every pixel of the image; its
values at the sampled pixels are checked against the naive ones, so the speed-up is for equal
output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _naive(classifier: object, padded: np.ndarray, pixels: np.ndarray, window: int, batch: int) -> np.ndarray:
    views = np.lib.stride_tricks.sliding_window_view(padded, (window, window))
    out = []
    for start in range(0, len(pixels), batch):
        rows, cols = pixels[start : start + batch].T
        windows = np.ascontiguousarray(views[rows, cols])[..., None]
        out.append(classifier.predict_on_batch(windows)[:, 0])
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="square image side (default 512)")
    parser.add_argument("--naive-pixels", type=int, default=4096, help="pixels classified the naive way")
    parser.add_argument("--batch", type=int, default=512, help="windows per naive batch")
    parser.add_argument("--tile", type=int, default=256, help="dense output tile side")
    parser.add_argument("--repeats", type=int, default=2, help="timed dense passes (best is reported)")
    parser.add_argument("--window", type=int, default=65, help="window side (Ciresan's N4: 95)")
    parser.add_argument("--kernels", type=int, nargs="+", default=[4, 4, 3], help="conv kernels (N4: 4 5 4 4)")
    parser.add_argument("--filters", type=int, nargs="+", default=None, help="maps per block (default 48 each)")
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from nerveseg.model.patch_cnn import build_patch_cnn, dense_predict, dense_twin, pad_for_windows, spec_of

    keras.utils.set_random_seed(0)
    filters = args.filters or [48] * len(args.kernels)
    classifier = build_patch_cnn(args.window, filters, args.kernels, 200)
    spec = spec_of(classifier)
    dense = dense_twin(classifier)
    rng = np.random.default_rng(0)
    image = rng.random((args.size, args.size)).astype(np.float32)
    padded = pad_for_windows(image, spec.window)
    n_naive = min(args.naive_pixels, args.size**2)
    pixels = np.stack(np.unravel_index(rng.choice(args.size**2, n_naive, replace=False), image.shape), axis=1)
    print(f"net {spec}, {classifier.count_params():,} params; image {args.size}x{args.size}; ", end="")
    print(f"TF {tf.__version__}, devices {[d.device_type for d in tf.config.list_logical_devices()]}")

    _naive(classifier, padded, pixels[: args.batch], spec.window, args.batch)  # warm-up (tracing)
    start = time.perf_counter()
    naive = _naive(classifier, padded, pixels, spec.window, args.batch)
    naive_rate = n_naive / (time.perf_counter() - start)

    dense_predict(dense, image[: args.tile, : args.tile], tile_size=args.tile)  # warm-up
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        dense_map = dense_predict(dense, image, tile_size=args.tile)
        times.append(time.perf_counter() - start)
    dense_rate = args.size**2 / min(times)

    max_diff = float(np.abs(dense_map[pixels[:, 0], pixels[:, 1]] - naive).max())
    whole = "all" if n_naive == args.size**2 else f"a random subset of {n_naive:,} of the {args.size**2:,}"
    print(f"naive sliding window: {naive_rate:,.0f} pixels/s (batch {args.batch}, measured on {whole} pixels)")
    print(f"dense pass:           {dense_rate:,.0f} pixels/s (whole image, tile {args.tile}, best of {args.repeats})")
    print(f"speed-up:             {dense_rate / naive_rate:,.1f}x; max |dense - naive| at those pixels {max_diff:.2e}")
    print(f"whole image: naive ~{args.size**2 / naive_rate:,.1f} s (extrapolated), dense {min(times):.2f} s")


if __name__ == "__main__":
    main()
