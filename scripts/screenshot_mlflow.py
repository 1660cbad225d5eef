"""Screenshots of the MLflow UI as a user sees it: the runs table, the newest CV parent run and one of its folds.

    python scripts/screenshot_mlflow.py [--tracking-uri sqlite:///mlflow.db] [--artifacts mlartifacts] [--out docs]

Starts ``mlflow server`` on 127.0.0.1 (a free port, one worker, job execution off: 2 processes, ~0.5 GB) over
the store, waits for /health, opens each page in headless Chromium (Debian's ``chromium``) and writes
docs/mlflow_runs.png, docs/mlflow_parent_run.png and docs/mlflow_fold_run.png. Exits non-zero with one line
when the server does not come up, a run is missing or a page is blank (nearly all pixels one colour); the
server is always stopped (SIGTERM to its own PID). Links carry ``workflowType=machine_learning``: MLflow 3.17
opens experiments in its GenAI view otherwise, whatever the experiment's tags say.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from nerveseg.track.schema import RUN_TYPE_TAG  # noqa: E402
from nerveseg.track.store import ui_fragment  # noqa: E402

BLANK_SHARE = 0.985  # a page whose most common colour covers more of it than this shows nothing
WINDOW = (1600, 1500)  # tall enough for the parent run's description (the CV table) and a fold's metrics


class ScreenshotError(RuntimeError):
    """Something a user would see as a broken page: reported in one line."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.read().strip() == b"OK"
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, startup_s: float) -> Iterator[str]:
    """The URL of a running ``mlflow server``; SIGTERM to its own PID when the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", backend_uri, "--default-artifact-root", str(artifacts)]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + startup_s
            while not healthy(url):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
                    why = (
                        f"exited with {server.returncode}"
                        if server.poll() is not None
                        else f"no answer in {startup_s:.0f} s"
                    )
                    raise ScreenshotError(f"mlflow server on {url} {why}: {tail[0]}")
                time.sleep(0.5)
            yield url
        finally:
            stop(server)


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's own PID; its worker lives in the group started for it, so kill what is left there."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)


def find_pages(url: str, experiment_name: str) -> dict[str, str]:
    """URL fragment per screenshot name: the runs table, the newest FINISHED CV parent run, its first fold run."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise ScreenshotError(f"no experiment {experiment_name!r} in the store; run `make demo` first")
    exp = experiment.experiment_id
    parents = client.search_runs(
        [exp], f"tags.`{RUN_TYPE_TAG}` = 'cv' and attributes.status = 'FINISHED'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    if not parents:
        raise ScreenshotError(f"experiment {experiment_name!r} has no finished CV run; run `make demo` first")
    parent = parents[0].info.run_id
    folds = client.search_runs(
        [exp], f"tags.`{RUN_TYPE_TAG}` = 'fold' and tags.`mlflow.parentRunId` = '{parent}'",
        order_by=["attributes.run_name ASC"],
    )  # fmt: skip
    if not folds:
        raise ScreenshotError(f"CV run {parent} has no fold runs")
    return {
        "mlflow_runs": f"/{ui_fragment(exp)}",
        "mlflow_parent_run": f"/{ui_fragment(exp, parent)}",
        "mlflow_fold_run": f"/{ui_fragment(exp, folds[0].info.run_id)}",
    }


def blank_share(png: Path) -> float:
    """Share of the pixels that have the image's most common colour (1.0 for an unreadable file)."""
    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if image is None:
        return 1.0
    _, counts = np.unique(image.reshape(-1, 3), axis=0, return_counts=True)
    return float(counts.max() / counts.sum())


def screenshot(chromium: str, url: str, out: Path, budget_ms: int) -> None:
    """One headless Chromium screenshot, written beside ``out`` and renamed into place when it is not blank."""
    tmp = out.with_name(f".{out.name}.tmp.png")
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                   f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}",
                   f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={tmp}", url]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)
    share = blank_share(tmp)
    if done.returncode != 0 or share > BLANK_SHARE:
        tmp.unlink(missing_ok=True)
        why = f"exit {done.returncode}" if done.returncode else f"{share:.1%} of it one colour"
        raise ScreenshotError(f"the page {url} came out blank ({why})")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}", help="the store to show")
    parser.add_argument("--artifacts", type=Path, default=ROOT / "mlartifacts", help="its artifact folder")
    parser.add_argument("--experiment", default="nerveseg", help="experiment name (default: nerveseg)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNGs go (default: docs/)")
    parser.add_argument("--startup-timeout", type=float, default=120.0, help="seconds to wait for /health")
    parser.add_argument("--budget-ms", type=int, default=15000, help="Chromium's virtual time per page")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        if chromium is None:
            raise ScreenshotError("chromium not found; install it (Debian: apt-get install chromium)")
        args.out.mkdir(parents=True, exist_ok=True)
        with mlflow_server(args.tracking_uri, args.artifacts.resolve(), args.startup_timeout) as url:
            for name, page in find_pages(url, args.experiment).items():
                screenshot(chromium, url + page, args.out / f"{name}.png", args.budget_ms)
                print(f"{args.out / name}.png  <- {url}{page}")
    except (ScreenshotError, subprocess.TimeoutExpired) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
