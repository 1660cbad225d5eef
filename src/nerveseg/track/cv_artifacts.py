"""What a fold run stores and how a finished one is read back: params, weights, OOF predictions, facts, plots.

A fold run is self-contained: it carries the config's params plus its own (fold, sizes, seed, held-out
subjects), the kept epoch's metrics under their own names, and its learning curve, so fold runs compare
side by side in the runs table. Names come from the run schema; a fold trained by another process or
machine is rebuilt from its artifacts, so no fold is ever trained twice.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from mlflow.entities import Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from nerveseg import names
from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError
from nerveseg.report.plots import plot_learning_curves
from nerveseg.run import fold_files
from nerveseg.tasks.base import Task
from nerveseg.track.schema import FOLD_TAG
from nerveseg.track.store import log_metrics
from nerveseg.train.fold_result import FoldResult


def model_summary(task: Task, config: TrainConfig) -> str:
    lines: list[str] = []
    task.build_model(config).summary(print_fn=lambda line, *args, **kwargs: lines.append(line))
    return "\n".join(lines) + "\n"


def log_fold_params(client: MlflowClient, run_id: str, params: dict[str, str]) -> None:
    """Logged when the fold run starts, so a running or failed fold already says what it trains on."""
    client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])


def kept_metrics(result: FoldResult) -> dict[str, float]:
    """The kept epoch (1-based) and that epoch's history values under their own names, plus ``val_score``.

    ``val_dice`` on a fold run is the per-epoch curve (its latest value is the last epoch);
    ``val_dice_kept`` is the value of the epoch whose weights were kept. With ``checkpoint="inner"`` the
    ``val_*`` history is on the inner split that chose the epoch; ``val_score`` is always the scored fold's.
    """
    epoch = result.kept_epoch
    metrics = {names.KEPT_EPOCH: float(epoch), names.VAL_SCORE: float(result.val_score)}
    for key in names.KEPT_HISTORY_KEYS:
        values = result.history.get(key) or []
        if 1 <= epoch <= len(values):
            metrics[names.kept_metric(key)] = float(values[epoch - 1])
    return metrics


def log_fold(client: MlflowClient, run_id: str, ids: np.ndarray, result: FoldResult, summary: str) -> None:
    """The fold's kept-epoch metrics and artifacts (weights, OOF, facts, learning curve) on its run."""
    k = result.fold
    work = result.weights_path.parent
    log_metrics(client, run_id, kept_metrics(result))
    weights = result.weights_path
    if weights.name != names.weights_file(k):  # readers find the weights by the schema's name
        weights = Path(shutil.copyfile(weights, work / names.weights_file(k)))
    client.log_artifact(run_id, str(weights), names.WEIGHTS_DIR)
    client.log_text(run_id, summary, names.MODEL_SUMMARY_ARTIFACT)
    oof_path = fold_files.save_oof(work / names.oof_fold_file(k), fold_files.fold_oof(ids, result))
    client.log_artifact(run_id, str(oof_path), names.OOF_DIR)
    facts = fold_files.fold_facts(ids, result)
    client.log_text(run_id, json.dumps(facts, indent=1) + "\n", names.fold_facts_artifact(k))
    curve_dir = work / f"fold_{k}_plots"
    curve_dir.mkdir(parents=True, exist_ok=True)
    curve = plot_learning_curves(
        result.history,
        curve_dir / Path(names.LEARNING_CURVE_ARTIFACT).name,
        kept_epoch=result.kept_epoch,
        title=f"fold {k}: kept epoch {result.kept_epoch}, val_score {result.val_score:.4f}",
    )
    client.log_artifact(run_id, str(curve), names.PLOTS_DIR)


def load_fold(client: MlflowClient, run: Run, ids: np.ndarray, folds: np.ndarray, work: Path) -> FoldResult:
    """A FoldResult rebuilt from a finished fold run's artifacts (trained by another call or process)."""
    k = int(run.data.tags[FOLD_TAG])
    run_id = run.info.run_id
    dst = work / f"fold_{k}_{run_id}"
    try:
        oof_local = client.download_artifacts(run_id, names.oof_fold_artifact(k), str(dst))
        facts_local = client.download_artifacts(run_id, names.fold_facts_artifact(k), str(dst))
    except (MlflowException, OSError) as err:
        raise NervesegError(f"fold run {run_id} (fold {k}) lacks its OOF artifacts ({err}); retrain that fold") from err
    facts = json.loads(Path(facts_local).read_text())
    weights = Path(f"runs:/{run_id}/{names.weights_artifact(k)}")
    return fold_files.fold_result(
        facts, fold_files.load_oof(oof_local), ids, folds, weights, source=f"fold run {run_id}"
    )
