"""Serving speed, side by side in one run: direct ensemble, pyfunc in process, HTTP (batch 1 and 32), bf16.

The model is a real registered CV run: by default ``experiments/demo.yaml`` (5 folds, 16..128 filters,
64x80, presence head) trained for ``--epochs`` (1) epoch on a tiny synthetic set in a temporary SQLite
store, then registered as ``nerveseg@champion`` (timing does not depend on how well it is trained).
Every mode predicts the same ``--images`` synthetic 580x420 TIFFs with TTA (5 folds x 2 views):

- direct:          ``inference.ensemble.predict_ensemble`` on images already at 64x80 (the models alone);
- segmenter:       ``tasks.nerve.segmenter.Segmenter.segment`` on decoded 580x420 arrays (resize, ensemble,
                   post-processing at 580x420, RLE): the core's end-to-end path, no MLflow;
- pyfunc:          ``mlflow.pyfunc.load_model(...).predict`` on a DataFrame of TIFF bytes (decode included);
- pyfunc arrays:   the same model's ``NervesegModel.predict`` on decoded uint8 arrays (unwrapped: MLflow's
                   schema check admits the file-bytes column only);
- http b32 / b1:   ``mlflow models serve --env-manager local`` on 127.0.0.1, ``dataframe_split`` requests
                   of base64 TIFFs, 32 or 1 image per request (JSON, base64 and HTTP included);
- one-image p50/p95 latency over HTTP, against the compute time of one image's 2 x folds forward passes
  (``predict_ensemble`` on one 64x80 image, p50);
- bf16:            the same fold weights in models built under Keras' ``mixed_bfloat16`` policy, direct;
                   its post-processed masks compared with float32's (mean Dice at 580x420).

Targets (issue 15): pyfunc >= 0.95x direct, HTTP b32 >= 0.8x direct, p50 latency <= 1.5x the compute time.
Run it alone (``flock /work/cpu.lock python benchmarks/serve_throughput.py``): timings of a shared CPU mean little.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the serving test's server helpers

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def train_and_register(work: Path, config_path: Path, epochs: int, images: int, folds: int | None) -> Path:
    """The config for ``epochs`` epochs on 5 subjects x 10 images, registered; returns the raw folder."""
    from nerveseg.config import load_config
    from nerveseg.data.synthetic import generate
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths
    from nerveseg.track.mlflow_store import MlflowStore
    from nerveseg.track.registry import register_best

    raw = work / "raw"
    generate(raw, subjects=5, images_per_subject=10, test=images, seed=3, test_masks_dir=work / "masks", progress=False)
    config = load_config(config_path, epochs=epochs, folds=folds)  # a warm-up longer than epochs is shortened
    started = time.perf_counter()
    cross_validate(config, CVPaths(raw, work / "cache", work / "folds"), MlflowStore(progress=False), progress=False)
    registered = register_best(raw_dir=raw, cache_dir=work / "cache", progress=False)
    seconds = time.perf_counter() - started
    print(f"trained {config_path.name} x {epochs} epoch(s) and registered {registered.uri} in {seconds:.0f} s")
    return raw


def rate(function: Callable[[], object], n_images: int, repeats: int) -> float:
    """Images per second: the median of ``repeats`` timed calls after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return n_images / statistics.median(times)


def latencies(function: Callable[[], object], count: int) -> tuple[float, float]:
    """(p50, p95) seconds of ``count`` calls after two warm-up calls."""
    function()
    function()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    p50, p95 = np.percentile(times, [50, 95])
    return float(p50), float(p95)


def bf16_models(config, weights):
    """The fold models rebuilt under ``mixed_bfloat16`` (float32 variables, bf16 compute), same weights."""
    import keras

    from nerveseg.model.unet import build_unet, unet_options

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        models = []
        for path in weights:
            model = build_unet(config.height, config.width, **unet_options(config), presence_head=config.presence_head)
            model.load_weights(path)
            models.append(model)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return models


def post_masks(probs: np.ndarray, presence: np.ndarray | None, settings) -> np.ndarray:
    from nerveseg.evaluate.postprocess import iter_postprocessed

    return np.concatenate([masks for _, masks in iter_postprocessed(probs, settings, presence)])


class Server:
    """``mlflow models serve`` of the registered model on a free port (as tests/test_serving.py starts it)."""

    def __init__(self, log: Path) -> None:
        from test_serving import _free_port, _get

        self.url = f"http://127.0.0.1:{_free_port()}"
        port = self.url.rsplit(":", 1)[1]
        command = [
            str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", "models:/nerveseg@champion",
            "--env-manager", "local", "--host", "127.0.0.1", "--port", port, "--workers", "1",
        ]  # fmt: skip
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + 300
        while _get(f"{self.url}/ping") != 200:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow models serve did not start; see {log}")
            time.sleep(0.5)

    def post(self, encoded: list[str]) -> list[dict]:
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}).encode()
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())["predictions"]

    def stop(self) -> None:
        from test_serving import _stop

        _stop(self.process)
        self.log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="synthetic 580x420 test images (64)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per ensemble batch / HTTP request (32)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per mode, median taken (3)")
    parser.add_argument("--latency-calls", type=int, default=30, help="one-image requests for p50/p95 (30)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the model (1)")
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "demo.yaml", help="model (demo.yaml)")
    parser.add_argument("--folds", type=int, help="override the config's folds (a quick smoke run)")
    args = parser.parse_args()

    from nerveseg.inference.ensemble import predict_ensemble
    from nerveseg.inference.images import decode_gray
    from nerveseg.logs import quiet_tensorflow

    quiet_tensorflow(False)
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as tmp:
        work = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        os.environ["MLFLOW_EXPERIMENT_NAME"] = "serve-bench"
        raw = train_and_register(work, args.config, args.epochs, args.images, args.folds)

        import mlflow

        files = sorted((raw / "test").glob("*.tif"), key=lambda p: int(p.stem))
        blobs = [p.read_bytes() for p in files]
        encoded = [base64.b64encode(b).decode("ascii") for b in blobs]
        gray = [decode_gray(b, p.name) for b, p in zip(blobs, files, strict=True)]
        n, size = len(files), args.batch_size

        pyfunc = mlflow.pyfunc.load_model("models:/nerveseg@champion")
        segmenter = pyfunc.unwrap_python_model().served
        models, config = segmenter.fold_models[0], segmenter.runs[0].config
        small = segmenter.model_inputs(gray)[segmenter.input_shape]
        frame = pd.DataFrame({"image": blobs})

        rows: dict[str, float] = {}
        rows["direct"] = rate(lambda: predict_ensemble(models, small, batch_size=size, progress=False), n, args.repeats)
        rows["segmenter"] = rate(lambda: segmenter.segment(gray), n, args.repeats)
        rows["pyfunc"] = rate(
            lambda: [pyfunc.predict(frame.iloc[i : i + size]) for i in range(0, n, size)], n, args.repeats
        )
        python_model = pyfunc.unwrap_python_model()  # arrays skip MLflow's schema check (it takes file bytes)
        rows["pyfunc arrays"] = rate(
            lambda: [python_model.predict(None, gray[i : i + size]) for i in range(0, n, size)], n, args.repeats
        )
        one = small[:1]
        compute_p50, _ = latencies(
            lambda: predict_ensemble(models, one, batch_size=1, progress=False), args.latency_calls
        )

        bf16 = bf16_models(config, segmenter.runs[0].weights_paths)
        rows["bf16 direct"] = rate(
            lambda: predict_ensemble(bf16, small, batch_size=size, progress=False), n, args.repeats
        )
        probs32, presence32 = predict_ensemble(models, small, batch_size=size, progress=False)
        probs16, presence16 = predict_ensemble(bf16, small, batch_size=size, progress=False)
        settings = segmenter.decision.settings
        masks32, masks16 = post_masks(probs32, presence32, settings), post_masks(probs16, presence16, settings)
        from nerveseg.evaluate.metrics import dice_per_image

        dice = float(dice_per_image(masks32, masks16).mean())
        nonempty = float((masks32.reshape(n, -1).any(axis=1)).mean())
        max_diff = float(np.abs(probs32 - probs16).max())

        server = Server(work / "serve.log")
        try:
            answer = server.post(encoded[:size])
            expected = [r.rle for r in segmenter.segment(gray[:size])]
            assert [row["rle"] for row in answer] == expected, "the server's masks differ from the Segmenter's"
            rows["http b32"] = rate(
                lambda: [server.post(encoded[i : i + size]) for i in range(0, n, size)], n, args.repeats
            )
            rows["http b1"] = rate(lambda: [server.post([e]) for e in encoded], n, 1)
            p50, p95 = latencies(lambda: server.post(encoded[:1]), args.latency_calls)
        finally:
            server.stop()

    passes = len(models) * 2
    direct = rows["direct"]
    print(
        f"\n{n} images 580x420, {args.config.name} model ({len(models)} folds x 2 views = {passes} passes/image), "
        f"batch {size}"
    )
    print(f"{'mode':<16}{'images/s':>10}{'x direct':>10}")
    for name, value in rows.items():
        print(f"{name:<16}{value:>10.1f}{value / direct:>10.2f}")
    print(f"one image over HTTP: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    print(f"one image's {passes} forward passes (predict_ensemble, batch 1): p50 {compute_p50 * 1000:.1f} ms")
    print(f"bf16 vs float32: mean Dice of post-processed masks {dice:.5f} ({nonempty:.0%} non-empty in float32), "
          f"max |prob difference| {max_diff:.4f}")  # fmt: skip
    checks = {
        "pyfunc >= 0.95x direct": rows["pyfunc"] >= 0.95 * direct,
        "http b32 >= 0.8x direct": rows["http b32"] >= 0.8 * direct,
        "p50 latency <= 1.5x compute": p50 <= 1.5 * compute_p50,
        "bf16 faster and Dice >= 0.999": rows["bf16 direct"] > direct and dice >= 0.999,
    }
    for name, ok in checks.items():
        print(f"{'met' if ok else 'NOT met'}: {name}")


if __name__ == "__main__":
    main()
