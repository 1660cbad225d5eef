"""The model leaves the run (issue 15): register the best CV run, predict new files with it, serve it over
HTTP with ``mlflow models serve``, and submit from ``models:/nerveseg@champion``. Hostile input to those
surfaces (issue 25: lying headers, inputs named twice, a stopped run, a truncated weights artifact) too.

One tiny tracked CV run (depth 2, 32x40, 2 folds x 1 epoch) in a SQLite store of its own. The server is
real (127.0.0.1, a free port, ``--env-manager local``, pip and proxies pointed nowhere so that any network
use fails) and is fed the real Kaggle sample beside the repo, or synthetic frames when it is absent.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from helpers import crafted_tiff_header, free_port, stop_server
from nerveseg import names
from nerveseg.track import run_reader

pytestmark = pytest.mark.slow

REAL_TRAIN = Path(__file__).resolve().parents[1].parent / "shared" / "real_sample" / "train"
STARTUP_SECONDS = 180  # TensorFlow + the model load: ~20 s on an idle 2-core machine


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Iterator[dict]:
    """A finished tiny CV run registered as nerveseg@champion; MLflow's environment points at its store."""
    from nerveseg.config import TrainConfig
    from nerveseg.run.cross_validate import cross_validate
    from nerveseg.run.store import CVPaths
    from nerveseg.track.mlflow_store import MlflowStore
    from nerveseg.track.registry import register_best

    tmp = tmp_path_factory.mktemp("serving")
    config = TrainConfig(
        name="tiny", height=32, width=40, depth=2, base_filters=4, presence_head=True, learning_rate=1e-3,
        batch_size=8, epochs=1, folds=2, seed=1,
    )  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT_NAME", "serving")
        paths = CVPaths(synthetic_root / "raw", tmp / "cache", tmp / "folds")
        result = cross_validate(config, paths, MlflowStore(progress=False), progress=False)
        version = register_best(raw_dir=synthetic_root / "raw", cache_dir=tmp / "cache", progress=False)
        yield {"tmp": tmp, "run_id": result.parent_id, "version": version, "root": synthetic_root}


@pytest.fixture(scope="module")
def images(registered: dict) -> Path:
    """A folder of frames to predict: the real sample's train images (masks left out), else synthetic ones."""
    source = REAL_TRAIN if REAL_TRAIN.is_dir() else registered["root"] / "raw" / "train"
    folder = registered["tmp"] / "frames"
    folder.mkdir(exist_ok=True)
    for path in sorted(source.glob("*.tif"))[:12]:
        if not path.stem.endswith("_mask"):
            shutil.copy(path, folder / path.name)
    return folder


def test_register_logs_the_model_once_and_moves_the_alias(registered: dict) -> None:
    from nerveseg.track.model_package import logged_model_of_run
    from nerveseg.track.registry import register_best
    from nerveseg.track.store import get_client

    client, first = get_client(), registered["version"]
    assert first.run_id == registered["run_id"] and first.alias == "champion"
    version = client.get_model_version("nerveseg", first.version)
    run = client.get_run(first.run_id)
    assert version.run_id == first.run_id and version.source == f"models:/{first.model_id}"
    assert "cv_score_mean" in version.description and "honest estimate" in version.description
    assert version.tags[names.DATA_FINGERPRINT] == run.data.tags[names.DATA_FINGERPRINT]
    if run.data.tags.get(names.GIT_COMMIT_TAG):
        assert version.tags[names.GIT_COMMIT_TAG] == run.data.tags[names.GIT_COMMIT_TAG]
    model = logged_model_of_run(client, first.run_id)
    assert model is not None and model.model_id == first.model_id and model.source_run_id == first.run_id

    second = register_best(first.run_id, alias="staging", progress=False)
    assert int(second.version) == int(first.version) + 1 and second.model_id == first.model_id  # logged once
    assert str(client.get_model_version_by_alias("nerveseg", "staging").version) == second.version
    assert str(client.get_model_version_by_alias("nerveseg", "champion").version) == first.version


def _predict_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from predict import main

    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_predict_writes_masks_overlays_and_csv_and_names_bad_files(
    registered: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "notes.jpg").write_text("not a picture")
    out = registered["tmp"] / "predicted"
    code, text = _predict_cli(
        [str(images), str(bad), "--model", "models:/nerveseg@champion", "--out", str(out), "--no-progress"], capsys
    )
    assert code == 2, text
    assert "empty.png: is empty" in text and "notes.jpg: is not a readable image" in text
    frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    stems = sorted(p.stem for p in images.glob("*.tif"))
    assert sorted(Path(f).stem for f in frame["file"]) == stems
    assert list(frame.columns) == ["file", "present", "probability", "area", "rle"]
    for stem in stems:
        assert (out / f"{stem}_mask.png").stat().st_size > 0 and (out / f"{stem}_overlay.png").stat().st_size > 0
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no temporary file left behind

    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, text = _predict_cli([str(images), "--out", str(out), "--no-progress"], capsys)
    assert code == 2 and "already exists" in text and len(text.strip().splitlines()) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def _predict_lines(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, list[str]]:
    """predict.py's exit status, stdout and stderr lines (progress off)."""
    from predict import main

    code = main([*argv, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_predict_skips_a_lying_header_and_predicts_a_file_named_twice_once(
    registered: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 25: a 130-byte TIFF claiming 100000x100000 pixels is one line, the CSV is still written."""
    hostile = tmp_path / "upload" / "huge.tif"
    hostile.parent.mkdir()
    hostile.write_bytes(crafted_tiff_header(100_000, 100_000))
    first = sorted(images.glob("*.tif"))[0]
    out = tmp_path / "predicted"
    code, stdout, errors = _predict_lines([str(images), str(first), str(hostile), "--out", str(out)], capsys)
    assert code == 2 and len(errors) == 1, errors
    assert errors[0].startswith(f"error: skipped {hostile}: its TIFF header says 100000x100000 pixels")
    assert "1 input(s) named more than once, predicted once" in stdout
    frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(frame["file"]) == sorted(p.name for p in images.glob("*.tif"))  # each once, the bad one not
    assert not (out / "huge_mask.png").exists()


def test_predict_finishes_a_stopped_run_in_the_same_folder_and_never_replaces_a_file(
    registered: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run that stopped half-way leaves some masks and overlays, no CSV and perhaps a temporary file: the same
    command finishes it, keeping the identical files; a file with other content is never replaced."""
    out = tmp_path / "predicted"
    argv = [str(images), "--out", str(out)]
    assert _predict_lines(argv, capsys)[0] == 0
    finished = {p.name: p.read_bytes() for p in out.iterdir()}
    stem = sorted(images.glob("*.tif"))[-1].stem
    for name in ("predictions.csv", f"{stem}_mask.png", f"{stem}_overlay.png"):
        (out / name).unlink()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".{stem}_mask.png.{int(dead.stdout)}.abcd1234.tmp").write_bytes(b"half")  # its writer was killed
    kept = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.startswith(".")}

    code, stdout, errors = _predict_lines(argv, capsys)
    assert code == 0 and errors == [], errors
    assert f"kept {len(kept)} identical output file(s)" in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == finished  # the same files, the temporary one gone
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in kept.items())  # none rewritten

    (out / "predictions.csv").unlink()
    other = out / f"{stem}_mask.png"
    other.write_bytes(b"a mask of another model")
    code, _, errors = _predict_lines(argv, capsys)
    assert code == 2 and len(errors) == 1, errors
    assert (
        errors[0].startswith("error: skipped ") and f"its output {other} already exists with other content" in errors[0]
    )
    assert other.read_bytes() == b"a mask of another model"
    frame = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(frame["file"]) == sorted(p.name for p in images.glob("*.tif") if p.stem != stem)


def _artifact_file(uri: str, name: str) -> Path:
    """The one file called ``name`` under a local artifact location ``file:///...``."""
    (found,) = Path(urllib.parse.urlparse(uri).path).rglob(name)
    return found


def test_a_truncated_weights_artifact_is_named_not_its_temporary_copy(
    registered: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nerveseg.errors import NervesegError
    from nerveseg.run.submit import make_submission
    from nerveseg.track.store import get_client
    from nerveseg.track.submission_run import MlflowSubmissions

    client, version = get_client(), registered["version"]
    fold_runs = run_reader.newest_finished_fold_runs(client, client.get_run(registered["run_id"]))
    files = [
        _artifact_file(fold_runs[0].info.artifact_uri, "fold_0.weights.h5"),
        _artifact_file(client.get_logged_model(version.model_id).artifact_location, "fold_0.weights.h5"),
    ]
    whole = [path.read_bytes() for path in files]
    try:
        for path, data in zip(files, whole, strict=True):
            path.write_bytes(data[:3000])
        with pytest.raises(NervesegError) as caught:
            make_submission(
                MlflowSubmissions.open, run_id=registered["run_id"], out_dir=tmp_path / "sub",
                raw_dir=registered["root"] / "raw", cache_dir=registered["tmp"] / "cache", progress=False,
            )  # fmt: skip
        message = str(caught.value)
        assert f"artifact weights/fold_0.weights.h5 of fold run {fold_runs[0].info.run_id}" in message
        assert "truncated file" in message and "nerveseg-submit" not in message
        code, _, errors = _predict_lines(
            [str(registered["root"] / "raw" / "test"), "--out", str(tmp_path / "p")], capsys
        )
        assert code == 2 and len(errors) == 1, errors
        assert errors[0].startswith("error: --model models:/nerveseg@champion: the model's artifact fold_0")
        assert "truncated file" in errors[0] and not (tmp_path / "p").exists() and not (tmp_path / "sub").exists()
    finally:
        for path, data in zip(files, whole, strict=True):
            path.write_bytes(data)


# ----------------------------------------------------------------------------------------- serving


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return 0


@pytest.fixture(scope="module")
def server(registered: dict) -> Iterator[str]:
    """``mlflow models serve -m models:/nerveseg@champion --env-manager local`` on a free port; its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", "models:/nerveseg@champion",
        "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    nowhere = "http://127.0.0.1:9"  # the discard port: any pip install or download would fail at once
    env = {
        **os.environ, "PIP_NO_INDEX": "1", "HTTP_PROXY": nowhere, "HTTPS_PROXY": nowhere, "NO_PROXY": "127.0.0.1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # its uvicorn
    }  # fmt: skip
    log_path = registered["tmp"] / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while _get(f"{url}/ping") != 200:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not come up on {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.5)
            yield url
        finally:
            stop_server(process)


def _post(url: str, body: object) -> tuple[int, dict]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(
        f"{url}/invocations", data=data, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _request(files: list[Path], return_mask: bool = True) -> dict:
    rows = [[base64.b64encode(p.read_bytes()).decode("ascii")] for p in files]
    return {"dataframe_split": {"columns": ["image"], "data": rows}, "params": {"return_mask": return_mask}}


def test_served_model_answers_as_predict_does_and_refuses_bad_requests(
    server: str, registered: dict, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = sorted(images.glob("*.tif"))
    out = tmp_path / "predicted"
    code, text = _predict_cli([str(images), "--out", str(out), "--no-progress"], capsys)
    assert code == 0, text
    expected = pd.read_csv(out / "predictions.csv", keep_default_na=False).set_index("file")

    status, answer = _post(server, _request(files))
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == len(files)
    for path, row in zip(files, rows, strict=True):
        want = expected.loc[path.name]
        assert row["present"] == bool(want["present"]) and row["area"] == int(want["area"])
        assert row["probability"] == float(want["probability"]) and row["rle"] == want["rle"]
        assert base64.b64decode(row["mask_png"]) == (out / f"{path.stem}_mask.png").read_bytes()

    not_image = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b"hello").decode()]]}}
    wrong_type = {"dataframe_split": {"columns": ["image"], "data": [[12345]]}}
    empty = {"dataframe_split": {"columns": ["image"], "data": []}}
    for body, words in ((not_image, "not a readable image"), (wrong_type, "column image"), (empty, "no images")):
        status, answer = _post(server, body)
        assert status == 400, answer
        assert words in answer.get("message", ""), answer
    status, answer = _post(server, _request(files[:1], return_mask=False))
    assert status == 200 and answer["predictions"][0]["rle"] == expected.loc[files[0].name]["rle"]
    assert "mask_png" not in answer["predictions"][0]


def test_served_model_answers_a_lying_header_and_bad_base64_with_one_line(server: str) -> None:
    """Issue 25: 400 with a one-line message and no stack trace, and the server keeps answering."""
    crafted = base64.b64encode(crafted_tiff_header(100_000, 100_000)).decode("ascii")
    cases = ((crafted, "image 0: its TIFF header says 100000x100000 pixels"), ("!!!!", "base64"))
    for cell, words in cases:
        status, answer = _post(server, {"dataframe_split": {"columns": ["image"], "data": [[cell]]}})
        assert status == 400, answer
        assert words in answer["message"] and "\n" not in answer["message"], answer
        assert "stack_trace" not in answer
    assert _get(f"{server}/ping") == 200


def test_submit_from_the_registered_model_writes_the_run_s_csv(registered: dict, tmp_path: Path) -> None:
    from nerveseg.run.submit import make_submission
    from nerveseg.track.submission_run import MlflowSubmissions

    common = {"raw_dir": registered["root"] / "raw", "cache_dir": registered["tmp"] / "cache", "progress": False}
    by_model = make_submission(
        MlflowSubmissions.open, model="models:/nerveseg@champion", out_dir=tmp_path / "a", **common
    )
    by_run = make_submission(MlflowSubmissions.open, run_id=registered["run_id"], out_dir=tmp_path / "b", **common)
    assert by_model.run_ids == [registered["run_id"]]
    assert by_model.csv_path.read_bytes() == by_run.csv_path.read_bytes()


def test_cv_train_register_registers_the_finished_run(
    registered: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cv_train import main
    from nerveseg.track.store import get_client

    config = tmp_path / "tiny.yaml"
    config.write_text("height: 32\nwidth: 40\ndepth: 2\nbase_filters: 4\nbatch_size: 8\nepochs: 1\nfolds: 2\n")
    root = registered["root"]
    argv = [
        "--config", str(config), "--raw-dir", str(root / "raw"), "--cache-dir", str(registered["tmp"] / "cache"),
        "--folds-dir", str(tmp_path / "folds"), "--no-progress", "--register", "--alias", "fresh",
    ]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    version = get_client().get_model_version_by_alias("nerveseg", "fresh")
    assert f"({version.run_id})" in out and "models:/nerveseg@fresh" in out
    assert version.run_id != registered["run_id"] and get_client().get_run(version.run_id).info.run_name == "tiny"


DOCS = Path(__file__).resolve().parents[1] / "docs" / "serving.md"
REAL_TEST_IMAGE = REAL_TRAIN.parent / "test" / "1.tif"


def test_the_documented_curl_call_answers(
    server: str, registered: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bash block after ``<!-- curl-call`` in docs/serving.md, run as written (port, image and request
    file swapped for this test's), answers what predict.py writes for the same image."""
    text = DOCS.read_text()
    block = text.split("<!-- curl-call", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    image = REAL_TEST_IMAGE if REAL_TEST_IMAGE.is_file() else registered["root"] / "raw" / "test" / "1.tif"
    script = (
        block.replace("http://127.0.0.1:5001", server)
        .replace("../shared/real_sample/test/1.tif", str(image))
        .replace("/tmp/request.json", str(tmp_path / "request.json"))
    )
    answer = json.loads(subprocess.run(["bash", "-c", script], capture_output=True, check=True, text=True).stdout)
    code, output = _predict_cli([str(image), "--out", str(tmp_path / "p"), "--no-progress"], capsys)
    assert code == 0, output
    expected = pd.read_csv(tmp_path / "p" / "predictions.csv", keep_default_na=False).iloc[0]
    (row,) = answer["predictions"]
    assert row["rle"] == expected["rle"] and row["area"] == expected["area"]
    assert row["probability"] == float(expected["probability"]) and row["present"] == bool(expected["present"])


def test_an_mlflow_run_exports_as_a_model_folder_that_predicts_as_its_registered_model(
    registered: dict, images: Path, tmp_path: Path
) -> None:
    """``register.py --run-id ID --out DIR``: the same pyfunc as the registered one, in a folder of its own."""
    import mlflow

    from nerveseg.errors import NervesegError
    from nerveseg.run.package import package_run
    from nerveseg.track.model_package import save_model_folder
    from nerveseg.track.run_reader import MlflowRuns

    common = {"raw_dir": registered["root"] / "raw", "cache_dir": registered["tmp"] / "cache", "progress": False}
    reader = MlflowRuns.open().reader(registered["run_id"])
    out = package_run(reader, tmp_path / "model", save_model_folder, **common)
    frame = pd.DataFrame({"image": [p.read_bytes() for p in sorted(images.glob("*.tif"))[:2]]})
    exported = mlflow.pyfunc.load_model(str(out)).predict(frame)
    champion = mlflow.pyfunc.load_model("models:/nerveseg@champion").predict(frame)
    pd.testing.assert_frame_equal(exported, champion)
    with pytest.raises(NervesegError, match="already exists; a model folder is never overwritten"):
        package_run(reader, out, save_model_folder, **common)
