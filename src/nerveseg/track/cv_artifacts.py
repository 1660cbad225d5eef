"""What a fold run stores and how a finished one is read back: weights, OOF predictions, facts, plots.

Names come from the run schema; a fold trained by another process or machine is rebuilt from its
artifacts, so no fold is ever trained twice.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg.config import TrainConfig
from nerveseg.data.cache import PreparedData
from nerveseg.data.raw import index_train, read_image
from nerveseg.errors import NervesegError
from nerveseg.evaluate.metrics import to_full_resolution
from nerveseg.model.unet import build_model_from_config
from nerveseg.track import schema
from nerveseg.track.schema import FOLD_TAG, OofArrays
from nerveseg.train import fold as training
from nerveseg.train.plots import pick_best_worst, plot_gallery, plot_learning_curves

GALLERY_IMAGES = 4  # best and worst each


def model_summary(config: TrainConfig) -> str:
    lines: list[str] = []
    build_model_from_config(config).summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines) + "\n"


def log_fold(
    client: MlflowClient, run_id: str, parent_id: str, data: PreparedData, result: training.FoldResult, summary: str
) -> None:
    """The fold's artifacts (weights, OOF, facts) on its run; its learning curve on the parent."""
    k = result.fold
    work = result.weights_path.parent
    client.log_batch(
        run_id,
        metrics=[Metric(schema.VAL_SCORE, result.val_score, int(time.time() * 1000), 0)],
    )
    weights = result.weights_path
    if weights.name != schema.weights_file(k):  # readers find the weights by the schema's name
        weights = Path(shutil.copyfile(weights, work / schema.weights_file(k)))
    client.log_artifact(run_id, str(weights), schema.WEIGHTS_DIR)
    client.log_text(run_id, summary, schema.MODEL_SUMMARY_ARTIFACT)
    oof = OofArrays(data.ids[result.val_index], result.oof_probs, result.oof_presence)
    oof_path = schema.save_oof(work / schema.oof_fold_file(k), oof)
    client.log_artifact(run_id, str(oof_path), schema.OOF_DIR)
    facts = {
        "fold": k,
        "kept_epoch": result.kept_epoch,
        "checkpoint": result.checkpoint,
        "val_score": result.val_score,
        "norm_mean": result.norm_mean,
        "norm_std": result.norm_std,
        "val_ids": data.ids[result.val_index].tolist(),
        "history": result.history,
    }
    client.log_text(run_id, json.dumps(facts, indent=1) + "\n", schema.fold_facts_artifact(k))
    curve = plot_learning_curves(
        result.history, work / f"learning_curve_fold_{k}.png", kept_epoch=result.kept_epoch, title=f"fold {k}"
    )
    client.log_artifact(parent_id, str(curve), schema.PLOTS_DIR)


def load_fold(client: MlflowClient, run: Run, data: PreparedData, folds: np.ndarray, work: Path) -> training.FoldResult:
    """A FoldResult rebuilt from a finished fold run's artifacts (trained by another call or process)."""
    k = int(run.data.tags[FOLD_TAG])
    run_id = run.info.run_id
    dst = work / f"fold_{k}_{run_id}"
    try:
        oof_local = client.download_artifacts(run_id, schema.oof_fold_artifact(k), str(dst))
        facts_local = client.download_artifacts(run_id, schema.fold_facts_artifact(k), str(dst))
    except (MlflowException, OSError) as err:
        raise NervesegError(f"fold run {run_id} (fold {k}) lacks its OOF artifacts ({err}); retrain that fold") from err
    facts = json.loads(Path(facts_local).read_text())
    oof = schema.load_oof(oof_local)
    expected = np.flatnonzero(folds == k)
    if not np.array_equal(oof.ids, data.ids[expected]):
        raise NervesegError(
            f"fold run {run_id} (fold {k}) validated other images than fold {k} of the current folds file; "
            "the data or the split changed, start a new run"
        )
    return training.FoldResult(
        fold=k,
        val_index=expected,
        oof_probs=oof.probs,
        oof_presence=oof.presence,
        history={key: list(values) for key, values in facts["history"].items()},
        kept_epoch=int(facts["kept_epoch"]),
        checkpoint=facts["checkpoint"],
        weights_path=Path(f"runs:/{run_id}/{schema.weights_artifact(k)}"),
        val_score=float(facts["val_score"]),
        norm_mean=float(facts["norm_mean"]),
        norm_std=float(facts["norm_std"]),
    )


def gallery(data: PreparedData, oof: np.ndarray, raw_dir: Path, path: Path, title: str) -> Path:
    """Best and worst OOF images at full resolution, outlined, with their Dice at threshold 0.5."""
    scores = training.full_resolution_dice(data, np.arange(len(data)), oof)
    best, worst = pick_best_worst(scores, data.has_mask, GALLERY_IMAGES)
    chosen = np.concatenate([best, worst])
    labels = ["best"] * len(best) + ["worst"] * len(worst)
    index = index_train(raw_dir)
    paths = dict(zip(index["id"], index["image_path"], strict=True))
    images = np.stack([read_image(paths[i]) for i in data.ids[chosen]])
    return plot_gallery(
        images,
        data.full_masks(chosen),
        to_full_resolution(oof[chosen]) > 0.5,
        [f"{label}: {i}  Dice {scores[j]:.3f}" for label, i, j in zip(labels, data.ids[chosen], chosen, strict=True)],
        path,
        suptitle=title,
    )


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
