"""Hostile input for the inference surfaces (issue 25): images whose headers lie, a --out in the raw data, inputs
named twice, a tracking server that never answers, an empty store, a truncated weights file, a quick --epochs 1.

Each case ends in one line naming the file or option (exit 2 for commands), before anything is decoded or
written. The cases that need a trained model (predict.py end to end, the served model) are in
``test_serving.py``, which trains one for its module.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
import tifffile

from helpers import (
    ROOT,
    assert_one_line_error,
    crafted_tiff_header,
    run_script,
    structured_image,
    tree_digest,
    write_set,
    write_tif,
)
from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.inference import images
from nerveseg.inference.images import ImageError, decode_gray, read_image_file

# ------------------------------------------------------------------------------------- image headers


def _png(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", array)
    assert ok
    return encoded.tobytes()


def _jpeg(array: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".jpg", array)
    assert ok
    return encoded.tobytes()


def _tiff(array: np.ndarray, **options: object) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, **options)
    return buffer.getvalue()


def _with_size(data: bytes, offset: int, size: bytes) -> bytes:
    """``data`` with the header's size field at ``offset`` replaced (the pixels stay as they were)."""
    return data[:offset] + size + data[offset + len(size) :]


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = _jpeg(structured_image(0)[:40, :60])
    sof = data.index(b"\xff\xc0")  # baseline frame header: length (2), precision (1), height (2), width (2)
    return _with_size(data, sof + 5, height.to_bytes(2, "big") + width.to_bytes(2, "big"))


def _apng() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    frames = [Image.fromarray(structured_image(i)[:40, :60]) for i in range(2)]
    frames[0].save(buffer, "PNG", save_all=True, append_images=frames[1:])
    return buffer.getvalue()


SMALL = structured_image(0)[:40, :60]
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "TIFF header claiming 100000x100000": (lambda: crafted_tiff_header(100_000, 100_000), "100000x100000"),
    "PNG header claiming 100000x100000": (
        lambda: _with_size(_png(SMALL), 16, (100_000).to_bytes(4, "big") * 2),
        "100000x100000",
    ),
    "JPEG header claiming 65000x65000": (lambda: _jpeg_claiming(65_000, 65_000), "65000x65000"),
    "16-bit PNG": (lambda: _png(SMALL.astype(np.uint16) * 257), "16-bit"),
    "float TIFF": (lambda: _tiff(SMALL.astype(np.float32)), "32-bit float"),
    "two-page TIFF": (lambda: _tiff(np.stack([SMALL, SMALL]), photometric="minisblack"), "2 TIFF pages"),
    "animated PNG": (_apng, "2 PNG frames"),
    "BMP": (lambda: cv2.imencode(".bmp", SMALL)[1].tobytes(), "BMP"),
    "text": (lambda: b"not a picture at all", "no TIFF, PNG or JPEG signature"),
    "TIFF header cut short": (lambda: crafted_tiff_header(60, 40)[:20], "corrupt or truncated header"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_lying_header_is_refused_before_a_pixel_is_decoded(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    make, words = HOSTILE[case]

    def no_decoding(*args: object) -> None:
        raise AssertionError("cv2.imdecode was called on a file its header should have refused")

    monkeypatch.setattr(images.cv2, "imdecode", no_decoding)
    with pytest.raises(ImageError) as caught:
        decode_gray(make(), "upload.tif")
    message = str(caught.value)
    assert message.startswith("upload.tif: ") and words in message and "\n" not in message


def test_a_file_whose_pixels_are_cut_off_is_one_image_error() -> None:
    data = _png(SMALL)
    with pytest.raises(ImageError, match=r"upload.png: is not a readable PNG"):
        decode_gray(data[: len(data) // 2], "upload.png")


@pytest.mark.parametrize(
    "data",
    [_png(SMALL), _jpeg(cv2.merge([SMALL] * 3)), _tiff(SMALL, photometric="minisblack"), _png(cv2.merge([SMALL] * 4))],
    ids=["gray PNG", "colour JPEG", "gray TIFF", "RGBA PNG"],
)
def test_ordinary_images_of_any_format_decode_to_gray(data: bytes) -> None:
    gray = decode_gray(data, "frame")
    assert gray.shape == SMALL.shape and gray.dtype == np.uint8


def test_a_file_larger_than_any_image_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.tif"
    with path.open("wb") as handle:  # sparse: no disk space used
        handle.truncate(images.MAX_IMAGE_FILE_BYTES + 1)
    with pytest.raises(ImageError, match=r"huge.tif: is .* MB, larger than any image"):
        read_image_file(path)


def test_the_served_model_names_an_empty_cell_and_a_lying_header() -> None:
    from nerveseg.inference.served import request_images

    with pytest.raises(NervesegError, match=r"image 0: holds no bytes .*base64"):
        request_images(pd.DataFrame({"image": [b""]}))
    with pytest.raises(NervesegError, match="image 1: its TIFF header says 100000x100000"):
        request_images(pd.DataFrame({"image": [_png(SMALL), crafted_tiff_header(100_000, 100_000)]}))


# ------------------------------------------------------------------------------------- predict.py inputs


def test_an_input_named_twice_is_predicted_once(tmp_path: Path) -> None:
    from nerveseg.run.predict import image_files

    folder = tmp_path / "frames"
    first, second = write_tif(folder / "1.tif", SMALL), write_tif(folder / "2.tif", SMALL)
    (tmp_path / "link.tif").symlink_to(first)
    found = image_files([folder, first, folder / "." / "2.tif", tmp_path / "link.tif", first])
    assert found.files == [first, second]
    assert found.duplicates == 4


def test_predict_refuses_an_out_inside_the_raw_data_before_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerveseg.run.predict import predict_files
    from nerveseg.track.registry import load_model

    raw = write_set(tmp_path / "raw", subjects=(1,), images=(1,))
    store = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    before = tree_digest(raw)
    for out in (raw / "train", raw / "new", raw):
        with pytest.raises(NervesegError, match=r"--out .* lies inside the raw data folder"):
            predict_files(
                [raw / "test" / "1.tif"], "models:/nerveseg@champion", out, load_model=load_model, raw_dir=raw
            )
    assert tree_digest(raw) == before and not (raw / "new").exists() and not store.parent.exists()


def test_predict_refuses_a_finished_run_s_folder_before_loading_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerveseg.run.predict import PREDICTIONS_FILE, predict_files
    from nerveseg.track.registry import load_model

    image = write_tif(tmp_path / "1.tif", SMALL)
    out = tmp_path / "out"
    out.mkdir()
    (out / PREDICTIONS_FILE).write_text("file,present\n")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'none' / 'mlflow.db'}")
    with pytest.raises(NervesegError, match=r"predictions.csv already exists; outputs are never overwritten"):
        predict_files([image], "models:/nerveseg@champion", out, load_model=load_model, raw_dir=tmp_path / "raw")
    assert (out / PREDICTIONS_FILE).read_text() == "file,present\n"


# ------------------------------------------------------------------------------------ stores and weights


def test_reading_commands_refuse_a_store_that_does_not_exist_instead_of_creating_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nerveseg.track.registry import register_best
    from nerveseg.track.store import TrackingError

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(TrackingError, match=r"mlflow\.db does not exist yet.*train first"):
        register_best()
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_weights_file_is_named_as_the_caller_describes_it(tmp_path: Path) -> None:
    import h5py

    from nerveseg.run.fold_files import check_weights_file

    path = tmp_path / "fold_0.weights.h5"
    with h5py.File(path, "w") as file:
        file["kernel"] = np.arange(4096, dtype=np.float32)
    check_weights_file(path, "fold 0's weights", "retrain it")  # whole: no error
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(NervesegError) as caught:
        check_weights_file(path, "fold 0's weights (artifact weights/fold_0.weights.h5 of run abc)", "retrain it")
    message = str(caught.value)
    assert message.startswith("fold 0's weights (artifact weights/fold_0.weights.h5 of run abc) cannot be read")
    assert "truncated" in message and str(tmp_path) not in message and message.endswith("; retrain it")


# --------------------------------------------------------------------------------------- --epochs 1


def test_a_quick_epochs_override_shortens_the_warm_up_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    from nerveseg.config import ConfigError, load_config

    demo = ROOT / "experiments" / "demo.yaml"
    warmup = load_config(demo).warmup_epochs
    assert warmup >= 1  # the case of the issue: demo.yaml warms up
    config = load_config(demo, epochs=1)
    assert (config.epochs, config.warmup_epochs) == (1, 0)
    assert f"note: --epochs 1 leaves no room for the config's warmup_epochs={warmup}" in capsys.readouterr().err
    assert load_config(demo, epochs=warmup + 1).warmup_epochs == warmup
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="warmup_epochs=1 must be smaller than epochs=1"):
        load_config(demo, epochs=1, warmup_epochs=1)  # an explicit warm-up is the user's, not shortened


# ------------------------------------------------------------------------------- as a user runs them


@contextlib.contextmanager
def silent_listener() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: a listener that accepts every connection and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # the socket is closed when the test ends
            while True:
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for connection in held:
            connection.close()


def _start(script: str, args: list[object], env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, str(ROOT / "src" / script), *map(str, args)]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_every_command_gives_up_on_a_silent_tracking_server_in_one_line(tmp_path: Path) -> None:
    """The five commands that talk to a tracking server, started together against one that never answers:
    each stops with one line naming the URI (the 120 s limit only keeps a regression from hanging the suite)."""
    raw = write_set(tmp_path / "raw", subjects=(1, 2), images=(1, 2))
    image = raw / "test" / "1.tif"
    common = ["--raw-dir", raw, "--cache-dir", tmp_path / "cache"]
    commands = {
        "cv_train.py": ["--config", ROOT / "experiments" / "demo.yaml", "--epochs", 2, "--folds-dir", tmp_path / "f"],
        "submit.py": ["--out-dir", tmp_path / "submissions"],
        "register.py": [],
        "tune.py": ["--study", "s", "--trials", 1, "--storage", f"sqlite:///{tmp_path / 'optuna.db'}"],
        "predict.py": [image, "--out", tmp_path / "predicted", "--no-progress"],
    }
    with silent_listener() as uri:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_TRACKING_URI": uri}
        started = {
            script: _start(script, args if script == "predict.py" else args + common, env)
            for script, args in commands.items()
        }
        try:
            for script, process in started.items():
                try:
                    out, err = process.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"{script} still waited for the silent server after 120 s")
                done = subprocess.CompletedProcess(process.args, process.returncode, out, err)
                assert_one_line_error(done, f"MLflow tracking server {uri} is not reachable")
        finally:
            for process in started.values():
                if process.poll() is None:
                    process.kill()
                    process.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # nothing written: no cache, folds, outputs


@pytest.mark.slow
def test_predict_into_the_raw_data_folder_is_refused_as_typed() -> None:
    """``predict.py x.tif --out data/raw/train``, the issue's own command, in the repo's data/raw."""
    raw = ROOT / "data" / "raw"
    before = tree_digest(raw) if raw.exists() else None
    done = run_script("predict.py", "docs/real_vs_synthetic.png", "--out", "data/raw/train", "--no-progress")
    assert_one_line_error(done, "--out data/raw/train lies inside the raw data folder")
    assert (tree_digest(raw) if raw.exists() else None) == before


@pytest.mark.parametrize("task", ["isbi2012", "toy"])
def test_predict_refuses_a_model_whose_answer_has_no_masks(synthetic_root: Path, tmp_path: Path, task: str) -> None:
    """predict.py writes masks: a model of a task whose served answer has no ``rle`` column is one line, before any
    image is predicted (the model here would fail if it were asked)."""
    from nerveseg.run.predict import predict_files

    def refuse(data, params=None):
        raise AssertionError("predicted")

    model = SimpleNamespace(model_config={names.TASK_CONFIG: task}, predict=refuse)
    raw, out = synthetic_root / "raw", tmp_path / "out"
    with pytest.raises(NervesegError, match=f"is a {task} model, which answers no masks"):
        predict_files([raw / "test" / "1.tif"], "models:/m", out, load_model=lambda uri: model, raw_dir=raw)
    assert not (tmp_path / "out" / "predictions.csv").exists()
