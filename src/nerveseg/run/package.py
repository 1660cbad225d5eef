"""A finished cross-validation's fold ensemble as a model, from either store: its files and its description.

A model of a CV run is every fold's weights, the run's ``config.yaml`` and the post-processing to apply
(``postprocessing.json``: the run's own, or decided now on its out-of-fold predictions as ``submit.py`` does).
``model_files`` gathers them into a work folder through ``run.store.RunReader``, so an MLflow run and a LocalStore
folder package alike; ``track.model_package`` wraps them as an MLflow pyfunc model, logged on an MLflow run (which
``track.registry`` registers, described by ``version_description``) or saved as a model folder by ``package_run``
(``register.py --run-dir DIR --out MODEL_DIR``) that ``predict.py --model MODEL_DIR`` and
``mlflow models serve -m MODEL_DIR`` load with no tracking store at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nerveseg import names
from nerveseg.errors import NervesegError
from nerveseg.io_utils import check_writable_dir
from nerveseg.paths import PROCESSED_DIR, RAW_DIR
from nerveseg.run.resolved_run import ResolvedRun, Sources, postprocessing_for_runs, resolve
from nerveseg.run.store import RunReader
from nerveseg.tasks import get_task
from nerveseg.tasks.base import Decision


@dataclass(frozen=True)
class ModelFiles:
    """The local files of one run's model; ``decision_source`` says where its post-processing came from."""

    run: ResolvedRun
    config_path: Path
    postprocessing_path: Path
    decision: Decision
    decision_source: str

    @property
    def task(self) -> str:
        return self.run.config.task


def model_files(reader: RunReader, sources: Sources) -> ModelFiles:
    """The run's config, fold weights and post-processing as files under ``sources.workdir``."""
    workdir = sources.workdir
    run = resolve(reader, workdir)
    config_path = reader.file(names.CONFIG_ARTIFACT, workdir)
    if config_path is None:  # resolve() read it, so only a store that changed meanwhile gets here
        raise NervesegError(f"run {run.run_id} ({run.name}) has no {names.CONFIG_ARTIFACT}")
    decision, source = postprocessing_for_runs([run], sources)
    decision_path = workdir / "model" / names.POSTPROCESSING_ARTIFACT
    decision_path.parent.mkdir(parents=True, exist_ok=True)
    decision_path.write_text(json.dumps(decision.to_json(), indent=2))
    return ModelFiles(run, config_path, decision_path, decision, source)


def check_new_model_dir(path: Path) -> Path:
    """``--out``: a folder that does not exist yet, in a writable folder (a model folder is never overwritten)."""
    path = Path(path)
    if os.path.lexists(path):
        raise NervesegError(f"--out {path} already exists; a model folder is never overwritten, pick a new one")
    return check_writable_dir(path, "--out")


def package_run(
    reader: RunReader,
    out: Path,
    save_model: Callable[[ModelFiles, Path], Path],
    *,
    raw_dir: Path = RAW_DIR,
    cache_dir: Path = PROCESSED_DIR,
    progress: bool = True,
) -> Path:
    """The run's fold ensemble as a NEW model folder ``out``, instead of a registry version: its files gathered in a
    work folder, then written by ``save_model`` (``track.model_package.save_model_folder``). A LocalStore run reads
    and creates no tracking store."""
    check_new_model_dir(out)
    with tempfile.TemporaryDirectory(prefix="nerveseg-package-") as tmp:
        return save_model(model_files(reader, Sources(Path(tmp), Path(raw_dir), Path(cache_dir), progress)), Path(out))


def estimate_line(reader: RunReader) -> str:
    """The run's ranking metric and, for the nerve task, the honest estimate with its 95 % interval."""
    metrics, task = reader.metrics(), get_task(reader.task)
    parts = []
    if task.ranking_metric in metrics:
        parts.append(f"{task.ranking_metric} {metrics[task.ranking_metric]:.4f}")
    honest = metrics.get(names.OOF_SCORE_POSTPROCESSED)
    if honest is not None:
        low = metrics.get(names.OOF_SCORE_POSTPROCESSED_CI_LOW)
        high = metrics.get(names.OOF_SCORE_POSTPROCESSED_CI_HIGH)
        interval = f" (95 % CI {low:.4f}-{high:.4f})" if low is not None and high is not None else ""
        parts.append(f"honest estimate: cross-fitted post-processed OOF score {honest:.4f}{interval}")
    return "; ".join(parts) or "no CV metrics on the run"


def version_description(reader: RunReader, table: str) -> str:
    """A registered version's Markdown description: which run, its estimate line, then ``table`` (the run's own
    description, its CV table)."""
    return f"CV run **{reader.name}** (`{reader.run_id}`): {estimate_line(reader)}\n\n{table.strip()}".strip()


__all__ = ["ModelFiles", "check_new_model_dir", "model_files", "package_run", "version_description"]
