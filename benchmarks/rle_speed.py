"""Benchmark: RLE-encode a full test set (5508 masks of 580x420). Target: under 2 s on a 2-core CPU.

    .venv/bin/python benchmarks/rle_speed.py [--images 5508]

Masks are realistic: ~59 % empty, the rest one ellipse of about 7000 pixels.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from nerveseg.submit.rle import rle_decode, rle_encode


def make_masks(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, 420, 580), np.uint8)
    for mask in masks[rng.random(count) > 0.59]:
        center = (int(rng.integers(270, 400)), int(rng.integers(100, 225)))
        axes = (int(rng.integers(35, 55)), int(rng.integers(45, 65)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5508)
    args = parser.parse_args()
    masks = make_masks(args.images)
    start = time.perf_counter()
    rows = [rle_encode(mask) for mask in masks]
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    for rle, mask in zip(rows, masks, strict=True):
        if not np.array_equal(rle_decode(rle), mask):
            raise SystemExit("round trip failed")
    decode_s = time.perf_counter() - start
    print(f"encode {args.images} masks: {encode_s:.2f} s ({args.images / encode_s:,.0f} masks/s; target < 2 s)")
    print(f"decode + compare:  {decode_s:.2f} s")


if __name__ == "__main__":
    main()
