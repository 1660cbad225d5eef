"""What issue 17's topology options cost, without training: the border weight maps, the crop stream with
and without weights and elastic deformation (crops/s), and the watershed gap closing and its OOF search.

    python benchmarks/isbi_topology_cost.py --root ../shared/isbi2012
    python benchmarks/isbi_topology_cost.py --root ../shared/isbi2012 --crop 256 --crops 400

The post-processing is timed on stand-in OOF probabilities (the labels blurred, with noise and a few
broken membranes), so its time is real and its V_rand errors are only a sanity check.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def stand_in_oof(membranes, seed: int = 0):
    """Blurred labels with noise and holes punched in the membranes: probabilities with gaps to close."""
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    probs = ndimage.gaussian_filter(membranes.astype(np.float32), sigma=(0, 1.5, 1.5))
    probs = probs / max(float(probs.max()), 1e-6)
    for index in range(len(probs)):
        for row, col in rng.integers(8, probs.shape[1] - 8, size=(40, 2)):
            probs[index, row - 3 : row + 3, col - 3 : col + 3] *= 0.3  # a gap in whatever membrane is there
    return np.clip(probs + rng.normal(0, 0.08, probs.shape), 0, 1).astype(np.float32)


def time_stream(images, membranes, weights, crop: int, crops: int, elastic_sigma: float) -> float:
    """Crops per second the stream yields (after one warm-up batch), batch 4."""
    from nerveseg.tasks.isbi2012.trainer import crop_dataset

    stream = iter(
        crop_dataset(images, membranes, crop, batch_size=4, seed=0, weights=weights, elastic_sigma=elastic_sigma)
    )
    next(stream)
    start = time.perf_counter()
    for _ in range(crops // 4):
        next(stream)
    return crops / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="ISBI data root")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--crops", type=int, default=400, help="crops drawn per stream variant")
    parser.add_argument("--elastic-sigma", type=float, default=10.0)
    args = parser.parse_args()

    import numpy as np

    from nerveseg.tasks.isbi2012.border_weights import training_weight_maps
    from nerveseg.tasks.isbi2012.challenge_metrics import cell_regions, challenge_scores
    from nerveseg.tasks.isbi2012.data import load_isbi
    from nerveseg.tasks.isbi2012.membrane_postprocess import close_membrane_gaps
    from nerveseg.tasks.isbi2012.postprocess import decide_isbi_postprocessing, postprocessed_v_rand_error

    data = load_isbi(args.root)
    images, membranes = data.images, data.membranes
    cells = np.mean([cell_regions(m).max() for m in membranes])
    start = time.perf_counter()
    weights = training_weight_maps(membranes, w0=10.0, sigma=5.0)
    per_slice = (time.perf_counter() - start) / len(membranes)
    print(f"{len(images)} slices {images.shape[1:]}, {cells:.0f} cells per slice on average")
    print(f"border weight maps (w0 10, sigma 5): {per_slice:.2f} s per slice; max weight {weights.max():.1f} (mean 1)")

    for label, use_weights, sigma in [
        ("plain (flips/rot90)", False, 0.0),
        ("+ weights", True, 0.0),
        (f"+ elastic {args.elastic_sigma:g}", False, args.elastic_sigma),
        ("+ weights + elastic", True, args.elastic_sigma),
    ]:
        rate = time_stream(images, membranes, weights if use_weights else None, args.crop, args.crops, sigma)
        print(f"crop stream {args.crop}x{args.crop}, {label:<22}: {rate:7.1f} crops/s")

    oof = stand_in_oof(membranes)
    start = time.perf_counter()
    close_membrane_gaps(oof, 0.1, 32)
    print(f"watershed gap closing: {(time.perf_counter() - start) / len(oof):.3f} s per slice")
    start = time.perf_counter()
    settings = decide_isbi_postprocessing(oof, membranes)
    seconds = time.perf_counter() - start
    raw = challenge_scores(oof, membranes).v_rand_error
    print(
        f"OOF post-processing search over {len(oof)} slices: {seconds:.0f} s -> {settings.describe()}; "
        f"stand-in V_rand error {raw:.4f} -> {postprocessed_v_rand_error(oof, membranes, settings):.4f}"
    )


if __name__ == "__main__":
    main()
