"""Training throughput: the real input pipeline (with augmentation) vs ``fit`` on in-memory arrays.

The pipeline should cost nothing: its images/s should be >= 95 % of feeding the same model
ready-made float arrays without augmentation. Both runs use the same model, batch size and
number of steps, each after a warm-up epoch (tracing, oneDNN kernel selection), on this machine.

    .venv/bin/python benchmarks/train_throughput.py            # reference U-Net, 64x80, ~2-3 min on 2 cores
    .venv/bin/python benchmarks/train_throughput.py --base-filters 4 --depth 3 --steps 50
    .venv/bin/python benchmarks/train_throughput.py --determinism   # pipeline with op determinism off vs on

``--determinism`` measures what ``deterministic: true`` (the default) costs: the same pipeline run
with TensorFlow op determinism off and on, alternated ``--repeats`` times; the best rate of each counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import keras
import numpy as np

from nerveseg.config import TrainConfig
from nerveseg.model.losses import compile_model
from nerveseg.model.unet import build_model_from_config, model_flops_per_image
from nerveseg.train.fold import set_op_determinism
from nerveseg.train.input_pipeline import make_dataset


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch and of each batch (to see pauses), and the process's CPU time per epoch.

    CPU time (all threads) counts the work done, so it stays comparable when other processes
    share the cores and wall times are noisy; wall time also catches stalls waiting for input.
    """

    def on_train_begin(self, logs=None) -> None:
        self.epochs: list[float] = []
        self.cpu: list[float] = []
        self.batches: list[list[float]] = []

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._start = self._last = time.perf_counter()
        self._cpu_start = time.process_time()
        self.batches.append([])

    def on_train_batch_end(self, batch, logs=None) -> None:
        now = time.perf_counter()
        self.batches[-1].append(now - self._last)
        self._last = now

    def on_epoch_end(self, epoch, logs=None) -> None:
        self.epochs.append(time.perf_counter() - self._start)
        self.cpu.append(time.process_time() - self._cpu_start)


def synthetic(n: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with a bright disc (the mask) on two thirds of them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n, height, width), np.uint8)
    for i in np.flatnonzero(np.arange(n) % 3):
        cy, cx, r = rng.uniform(0.3, 0.7) * height, rng.uniform(0.3, 0.7) * width, rng.uniform(0.08, 0.15) * width
        masks[i] = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    images = np.clip(rng.normal(80, 30, (n, height, width)) + 100 * masks, 0, 255).astype(np.uint8)
    return images, masks


def run(config: TrainConfig, mode: str, images: np.ndarray, masks: np.ndarray) -> tuple[float, EpochTimer]:
    """images/s of the second (measured) epoch; the first one is the warm-up."""
    keras.backend.clear_session()
    set_op_determinism(config.deterministic)
    keras.utils.set_random_seed(config.seed)
    model = build_model_from_config(config)
    compile_model(model, config, steps_per_epoch=len(images) // config.batch_size)
    timer = EpochTimer()
    if mode == "numpy":
        x = images.astype(np.float32)[..., None] / 255.0
        y = {"mask": masks.astype(np.float32)[..., None]}
        model.fit(x, y, batch_size=config.batch_size, epochs=2, shuffle=True, callbacks=[timer], verbose=0)
    else:
        ds = make_dataset(
            images,
            masks,
            batch_size=config.batch_size,
            shuffle=True,
            seed=config.seed,
            augment_strength=config.augment_strength,
            augment_flip=config.augment_flip,
            repeat=True,  # as train_fold does: one iterator for the whole fit
        )
        steps = len(images) // config.batch_size
        model.fit(ds, epochs=2, steps_per_epoch=steps, shuffle=False, callbacks=[timer], verbose=0)
    return len(images) / timer.epochs[1], timer


def compare_determinism(config: TrainConfig, images: np.ndarray, masks: np.ndarray, repeats: int, flops: float) -> None:
    """The real pipeline with op determinism off and on; prints each run and the on/off ratio of the best rates."""
    rates: dict[bool, float] = {}
    cpu: dict[bool, float] = {}
    for deterministic in (False, True) * repeats:
        rate, timer = run(config.replace(deterministic=deterministic), "pipeline", images, masks)
        rates[deterministic] = max(rate, rates.get(deterministic, 0.0))
        cpu[deterministic] = min(timer.cpu[1] / len(images), cpu.get(deterministic, np.inf))
        print(
            f"deterministic={deterministic!s:>5}: {rate:7.1f} images/s ({timer.epochs[1]:.1f} s; warm-up "
            f"{timer.epochs[0]:.1f} s), {3 * flops * rate / 1e9:.0f} GFLOP/s; "
            f"CPU {timer.cpu[1] / len(images) * 1e3:.1f} ms/image; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    print(
        f"best: off {rates[False]:.1f}, on {rates[True]:.1f} images/s; on/off {rates[True] / rates[False]:.3f} "
        f"(CPU time per image on/off {cpu[True] / cpu[False]:.3f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=80)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (one warm-up + one measured epoch)")
    parser.add_argument("--augment-strength", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this often; best rate counts")
    parser.add_argument("--mixed-precision", action="store_true", help="for GPUs; slow on CPU")
    parser.add_argument("--determinism", action="store_true", help="compare op determinism off/on (pipeline)")
    args = parser.parse_args()
    config = TrainConfig(
        name="benchmark", height=args.height, width=args.width, depth=args.depth, base_filters=args.base_filters,
        batch_size=args.batch_size, augment_strength=args.augment_strength, augment_flip=True,
        mixed_precision=args.mixed_precision, learning_rate=1e-4,
    )  # fmt: skip
    images, masks = synthetic(args.steps * args.batch_size, args.height, args.width)
    flops = model_flops_per_image(build_model_from_config(config))
    print(f"model depth={args.depth} base_filters={args.base_filters} {args.height}x{args.width}: "
          f"{flops / 1e9:.3f} GFLOP forward per image; batch {args.batch_size}, {args.steps} steps/epoch")  # fmt: skip
    if args.determinism:
        compare_determinism(config, images, masks, args.repeats, flops)
        return
    rates: dict[str, float] = {}
    steady: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for mode in ("numpy", "pipeline") * args.repeats:
        rate, timer = run(config, mode, images, masks)
        steps = np.array(timer.batches[1])
        rates[mode] = max(rate, rates.get(mode, 0.0))
        steady[mode] = max(args.batch_size / np.median(steps), steady.get(mode, 0.0))
        cpu[mode] = min(timer.cpu[1] / len(images), cpu.get(mode, np.inf))
        print(
            f"{mode:>8}: {rate:7.1f} images/s over the measured epoch ({timer.epochs[1]:.1f} s; warm-up "
            f"{timer.epochs[0]:.1f} s), {3 * flops * rate / 1e9:.0f} GFLOP/s training; steady state "
            f"{args.batch_size / np.median(steps):.1f} images/s (median step {np.median(steps) * 1e3:.0f} ms, "
            f"slowest {steps.max() * 1e3:.0f} ms); CPU {timer.cpu[1] / len(images) * 1e3:.1f} ms/image; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    ratio = rates["pipeline"] / rates["numpy"]
    print(f"best: numpy {rates['numpy']:.1f}, pipeline {rates['pipeline']:.1f} images/s")
    print(f"ratio pipeline / numpy: {ratio:.3f} ({'OK' if ratio >= 0.95 else 'BELOW'} target 0.95); "
          f"steady-state ratio {steady['pipeline'] / steady['numpy']:.3f}; "
          f"CPU-time ratio numpy / pipeline {cpu['numpy'] / cpu['pipeline']:.3f}")  # fmt: skip
    print("with a 1-minute load average above ~2 (other processes on these 2 cores) the wall-clock ratio is noise")


if __name__ == "__main__":
    main()
