"""A CV run's fold ensemble as one MLflow Model (pyfunc), logged on the CV parent run or saved as a model folder.

``log_cv_model`` logs it on an MLflow CV run (what ``register.py`` registers); ``save_model_folder`` writes it as
a plain folder from a run of either store (``run.package.package_run``: ``register.py --run-dir DIR --out
MODEL_DIR``), which ``mlflow.pyfunc.load_model``, ``predict.py --model MODEL_DIR`` and ``mlflow models serve -m
MODEL_DIR`` load with no tracking store. The files come from ``run.package.model_files``.

The package holds everything a prediction needs: every fold's ``.weights.h5``, the run's ``config.yaml``
and ``postprocessing.json`` as artifacts, the task and the TTA switch in the model config, the
``nerveseg`` package itself as code (so ``mlflow models serve --env-manager local`` needs nothing but the
pinned libraries), a signature, an input example and exact pip requirements. Predictions go through
``tasks.nerve.segmenter``, the path ``submit.py`` writes the Kaggle CSV with, and the request and answer are
``inference.served``'s: this module imports the core, never the reverse.

MLflow's scoring server builds the input DataFrame (a column ``image`` of encoded image files) from a
``dataframe_split`` request whose cells are base64 strings (the signature's ``binary`` type decodes them). A list
or array of uint8 images is accepted in process only (``NervesegModel.predict`` on the unwrapped model: MLflow's
schema check only lets the DataFrame through ``PyFuncModel.predict``). The answer has ``present``,
``probability``, ``area`` (pixels) and ``rle`` at the image's own size, plus ``mask_png`` with params
``{"return_mask": true}``; for ISBI 2012, ``membrane_tiff`` (a float32 probability map).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.paths import PROJ_ROOT
from nerveseg.run.fold_files import check_weights_file
from nerveseg.run.package import ModelFiles, check_new_model_dir, model_files
from nerveseg.run.resolved_run import DECIDED, Sources
from nerveseg.track import schema
from nerveseg.track.run_reader import MlflowRunReader

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/nerveseg, shipped as the model's code
REQUIREMENTS = PROJ_ROOT / "requirements.txt"
# what importing nerveseg's inference path and the pyfunc needs at serving time (pins from requirements.txt)
RUNTIME_PACKAGES = (
    "tensorflow", "keras", "numpy", "h5py", "opencv-python-headless", "pandas", "scikit-image", "tifffile",
    "mlflow", "pyyaml", "tqdm",
)  # fmt: skip
EXAMPLE_SHAPE = (64, 64)  # a small gray image in the input example (ISBI U-Nets need sides divisible by 2**k)
DEFAULT_BATCH_SIZE = 32
REPACKAGE = "src/register.py --run-id ID, or --run-dir DIR --out MODEL_DIR for a LocalStore folder"


# ---------------------------------------------------------------------------------- the pyfunc model


class BadInput(MlflowException):
    """A malformed request: MLflow's scoring server answers it with HTTP 400 and this one-line message.

    The server prefixes the message of any ``MlflowException`` from ``predict`` with the whole input
    DataFrame ("Failed to predict data '...'"), over several lines; the answer keeps only this line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)
        self.one_line = message

    def serialize_as_json(self) -> str:
        return json.dumps({"error_code": self.error_code, "message": self.one_line})


class NervesegModel(mlflow.pyfunc.PythonModel):
    """The fold ensemble of one CV run behind MLflow's pyfunc interface (see the module docstring)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from nerveseg.config import load_config
        from nerveseg.tasks import get_task
        from nerveseg.tasks.base import TrainedModels

        artifacts, options = context.artifacts, context.model_config or {}
        config = load_config(artifacts[schema.MODEL_CONFIG_ARTIFACT])
        weights = [Path(artifacts[schema.model_weights_key(k)]) for k in range(config.folds)]
        for k, path in enumerate(weights):
            what = f"the model's artifact {schema.model_weights_key(k)} ({path.name})"
            check_weights_file(path, what, f"restore the artifact, or package the CV run again ({REPACKAGE})")
        source = f"the model's {names.POSTPROCESSING_ARTIFACT}"
        values = json.loads(Path(artifacts[schema.MODEL_POSTPROCESSING_ARTIFACT]).read_text())
        task = get_task(config.task)
        decision = task.decision_from_json(values, source=source)
        tta = bool(options.get(schema.TTA_CONFIG, True))
        batch_size = int(options.get(schema.BATCH_SIZE_CONFIG, DEFAULT_BATCH_SIZE))
        self.served = task.served([TrainedModels(config, weights)], decision, tta=tta, batch_size=batch_size)

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:  # MLflow reads the hint: a DataFrame hint adds no validation of its own
        """One output row per input image; a malformed input raises ``BadInput`` (HTTP 400 when served)."""
        from nerveseg.inference.served import request_images

        return_mask = bool((params or {}).get(names.RETURN_MASK_PARAM, False))
        try:
            return self.served.answer(request_images(model_input), return_mask=return_mask)
        except NervesegError as err:
            raise BadInput(str(err)) from err


# ----------------------------------------------------------------------------------- how it is logged


def signature(task: str) -> ModelSignature:
    """Input: the ``image`` column (bytes); output: the task's answer columns; param ``return_mask`` where the answer
    has an optional column (the nerve task's ``mask_png``)."""
    from nerveseg.tasks import get_task

    columns = get_task(task).served_columns
    if not columns:
        raise NervesegError(f"the {task} task has no served model; its runs are submitted (submit.py), not packaged")
    outputs = Schema([ColSpec(DataType[c.kind], c.name, required=c.required) for c in columns])
    inputs = Schema([ColSpec(DataType.binary, names.IMAGE_COLUMN)])
    if all(c.required for c in columns):
        return ModelSignature(inputs, outputs)
    return ModelSignature(inputs, outputs, ParamSchema([ParamSpec(names.RETURN_MASK_PARAM, DataType.boolean, False)]))


def input_example() -> pd.DataFrame:
    """One small gray PNG (a gradient): shows the request's form; its prediction is checked when logged."""
    from nerveseg.inference.images import encode_png

    height, width = EXAMPLE_SHAPE
    gradient = (np.add.outer(np.arange(height), np.arange(width)) * 2).astype(np.uint8)
    return pd.DataFrame({names.IMAGE_COLUMN: [encode_png(gradient)]})


def pip_requirements(path: Path = REQUIREMENTS) -> list[str]:
    """``name==version`` for every runtime package, read from the project's pinned ``requirements.txt``."""
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)==([^\s#;]+).*", line)
        if match:
            pins[match.group(1).lower()] = match.group(2)
    missing = [name for name in RUNTIME_PACKAGES if name not in pins]
    if missing:
        raise NervesegError(f"{path} pins no version of {missing}; the served model needs exact pins")
    return [f"{name}=={pins[name]}" for name in RUNTIME_PACKAGES]


def logged_model_of_run(client: MlflowClient, run_id: str) -> LoggedModel | None:
    """The newest READY model called ``model`` that the run output (None when it has none yet)."""
    outputs = client.get_run(run_id).outputs
    found = []
    for output in outputs.model_outputs if outputs is not None else []:
        model = client.get_logged_model(output.model_id)
        if model.name == schema.MODEL_NAME and model.status == LoggedModelStatus.READY:
            found.append(model)
    return max(found, key=lambda m: m.creation_timestamp, default=None)


def _pyfunc_arguments(files: ModelFiles, tta: bool, batch_size: int) -> dict[str, Any]:
    """What ``mlflow.pyfunc.log_model`` and ``save_model`` both take: the files, the code, the model config."""
    artifacts = {
        schema.MODEL_CONFIG_ARTIFACT: str(files.config_path),
        schema.MODEL_POSTPROCESSING_ARTIFACT: str(files.postprocessing_path),
        **{schema.model_weights_key(k): str(p) for k, p in enumerate(files.run.weights_paths)},
    }
    return {
        "python_model": NervesegModel(),
        "artifacts": artifacts,
        "code_paths": [str(PACKAGE_DIR)],
        "model_config": {schema.TTA_CONFIG: tta, schema.BATCH_SIZE_CONFIG: batch_size, names.TASK_CONFIG: files.task},
        "signature": signature(files.task),
        "input_example": input_example(),
        "pip_requirements": pip_requirements(),
    }


def log_cv_model(
    client: MlflowClient,
    reader: MlflowRunReader,
    sources: Sources,
    *,
    tracking_uri: str,
    tta: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> LoggedModel:
    """Log CV run ``reader``'s fold ensemble as the pyfunc ``model`` on that run; the existing one if logged.

    The LoggedModel is created with the client in the run's experiment and linked to the run as its
    output, then ``mlflow.pyfunc.log_model(name="model", model_id=...)`` fills it, so nothing relies on
    MLflow's global active run. Post-processing is the run's ``postprocessing.json`` (decided now and kept on
    the run when missing, as ``submit.py`` does).
    """
    run_id = reader.run_id
    existing = logged_model_of_run(client, run_id)
    if existing is not None:
        return existing
    run = reader.run
    files = model_files(reader, sources)
    if files.decision_source == DECIDED:
        client.log_dict(run_id, files.decision.to_json(), names.POSTPROCESSING_ARTIFACT)
    model = client.create_logged_model(
        run.info.experiment_id,
        name=schema.MODEL_NAME,
        source_run_id=run_id,
        params={k: str(v)[: names.MAX_PARAM_LENGTH] for k, v in run.data.params.items()},
        tags={names.TASK_CONFIG: files.task, schema.TTA_CONFIG: str(tta).lower()},
    )
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    mlflow.set_tracking_uri(tracking_uri)  # log_model writes to MLflow's current store
    mlflow.pyfunc.log_model(
        name=schema.MODEL_NAME, model_id=model.model_id, **_pyfunc_arguments(files, tta, batch_size)
    )
    return client.get_logged_model(model.model_id)


def save_model_folder(files: ModelFiles, out: Path, *, tta: bool = True, batch_size: int = DEFAULT_BATCH_SIZE) -> Path:
    """A run's model ``files`` as a NEW MLflow model folder ``out`` (``mlflow.pyfunc.save_model``), from either
    store; no tracking store is read or written. Written beside ``out`` and renamed into place, so an interrupted
    save leaves no half model under that name."""
    out = check_new_model_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        mlflow.pyfunc.save_model(path=str(staging / "model"), **_pyfunc_arguments(files, tta, batch_size))
        os.rename(staging / "model", check_new_model_dir(out))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
