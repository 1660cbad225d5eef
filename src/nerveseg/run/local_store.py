"""``LocalStore``: a cross-validation kept in one folder, with the files an MLflow parent and its folds hold.

For benchmarks, tests and users without a tracking store: ``cross_validate(config, paths, LocalStore(dir))``.
The folder holds ``parent.json`` (status, params, data fingerprint, folds file hash, the creating process's
``nerveseg.provenance`` environment), ``config.yaml``, ``folds/<file>``, one ``fold_<k>/`` per fold (``weights/``,
``oof/``, ``fold_<k>.json``, ``status``, ``environment.json``: the code and machine that trained it) and, once
finished, ``metrics.json``, ``summary.json``, ``postprocessing.json``, ``description.md``, ``oof/`` (the OOF
probabilities and every image's score) and ``plots/``. A folder whose CV is unfinished is continued (finished
folds are kept, never retrained); a finished one, or one made with other params, data or split, is refused.
Every file is written atomically. ``LocalRunReader`` reads a finished folder back (``run.store.RunReader``), so
it can be compared, submitted and packaged as a model like an MLflow run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nerveseg import names
from nerveseg.config import DEFAULT_TASK, TrainConfig, config_to_yaml, param_strings
from nerveseg.errors import NervesegError
from nerveseg.io_utils import atomic_write_text, sha256_file
from nerveseg.provenance import environment_tags
from nerveseg.run import fold_files
from nerveseg.run.store import CVObserver, OpenedCV, StoredRun
from nerveseg.tasks.base import CVFinal
from nerveseg.train.fold_result import FoldResult

PARENT_FILE = "parent.json"
METRICS_FILE = "metrics.json"
DESCRIPTION_FILE = "description.md"
STATUS_FILE = "status"
ENVIRONMENT_FILE = "environment.json"  # a fold's, as the parent's "environment": nerveseg.provenance's tags
RUNNING, FINISHED, KILLED, FAILED = "RUNNING", "FINISHED", "KILLED", "FAILED"


class LocalStore:
    """One cross-validation in ``root`` (created when missing)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._cv: OpenedCV | None = None

    @property
    def parent_id(self) -> str:
        return self.root.name

    def begin(self, config: TrainConfig, requested: Sequence[int]) -> list[int]:
        parent = read_parent(self.root)
        if parent is not None:
            if parent["status"] == FINISHED:
                raise NervesegError(
                    f"{self.root} holds a FINISHED cross-validation and is never modified; pick a new folder"
                )
            differences = sorted(k for k, v in param_strings(config).items() if parent["params"].get(k) != v)
            if differences:
                raise NervesegError(
                    f"{self.root} holds a cross-validation with other settings ({', '.join(differences)}); "
                    "use the same config or a new folder"
                )
        done = self.finished_folds()
        return [k for k in requested if k not in done]

    def open(self, cv: OpenedCV) -> None:
        self._cv, self._environment = cv, environment_tags()
        folds_sha = sha256_file(cv.folds_file)
        parent = read_parent(self.root)
        self._creator = (parent or {}).get("environment", self._environment)  # kept when the folder is continued
        if parent is None:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.root / names.CONFIG_ARTIFACT, config_to_yaml(cv.config))
            fold_files.atomic_copy(cv.folds_file, self.root / names.FOLDS_DIR / cv.folds_file.name)
        elif (parent[names.DATA_FINGERPRINT], parent["folds_sha256"]) != (cv.data.fingerprint, folds_sha):
            raise NervesegError(f"{self.root} was trained on other data or another split; use a new folder")
        self._write_parent(cv.config, cv.data.fingerprint, folds_sha, RUNNING)

    def observers(self) -> Sequence[CVObserver]:
        return ()  # the history is kept with each fold's facts

    def start_fold(self, fold: int, params: Mapping[str, str]) -> str:
        folder = fold_dir(self.root, fold)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "params.json", fold_files.json_text(dict(params)))
        atomic_write_text(folder / ENVIRONMENT_FILE, fold_files.json_text(self._environment))
        atomic_write_text(folder / STATUS_FILE, RUNNING)
        return str(folder)

    def save_fold(self, result: FoldResult) -> None:
        folder = fold_dir(self.root, result.fold)
        fold_files.write_fold_files(folder, self._opened().data.ids, result)
        atomic_write_text(folder / STATUS_FILE, FINISHED)

    def finished_folds(self) -> set[int]:
        done = set()
        for status in self.root.glob(f"fold_*/{STATUS_FILE}"):
            if status.read_text() == FINISHED:
                done.add(int(status.parent.name.removeprefix("fold_")))
        return done

    def is_finalised(self) -> bool:
        parent = read_parent(self.root)
        return parent is not None and parent["status"] == FINISHED

    def load_fold(self, fold: int) -> FoldResult:
        cv, folder = self._opened(), fold_dir(self.root, fold)
        facts = json.loads((folder / names.fold_facts_artifact(fold)).read_text())
        oof = fold_files.load_oof(folder / names.oof_fold_artifact(fold))
        weights = folder / names.weights_artifact(fold)
        return fold_files.fold_result(facts, oof, cv.data.ids, cv.folds, weights, source=str(folder))

    def finalise(self, final: CVFinal, facts: Mapping[str, Any]) -> None:
        cv = self._opened()
        fold_files.write_cv_files(self.root, final, facts)
        atomic_write_text(
            self.root / METRICS_FILE, fold_files.json_text({k: float(v) for k, v in final.metrics.items()})
        )
        atomic_write_text(self.root / DESCRIPTION_FILE, final.description)
        parent = read_parent(self.root) or {}
        self._write_parent(cv.config, cv.data.fingerprint, parent.get("folds_sha256", ""), FINISHED)

    def stop(self, err: BaseException, *, on_purpose: bool) -> None:
        status = KILLED if on_purpose else FAILED
        for folder in self.root.glob("fold_*"):
            marker = folder / STATUS_FILE
            if marker.is_file() and marker.read_text() == RUNNING:
                atomic_write_text(marker, status)
        parent = read_parent(self.root)
        if parent is not None and parent["status"] != FINISHED:
            parent.update(status=status, error=f"{type(err).__name__}: {err}"[:500])
            atomic_write_text(self.root / PARENT_FILE, fold_files.json_text(parent))

    # ---------------------------------------------------------------------------------------- helpers

    def _opened(self) -> OpenedCV:
        if self._cv is None:
            raise RuntimeError("LocalStore: call open() first")
        return self._cv

    def _write_parent(self, config: TrainConfig, fingerprint: str, folds_sha: str, status: str) -> None:
        parent = {
            "status": status,
            "name": config.name,
            "params": param_strings(config),
            names.DATA_FINGERPRINT: fingerprint,
            "folds_sha256": folds_sha,
            "environment": self._creator,
        }
        atomic_write_text(self.root / PARENT_FILE, fold_files.json_text(parent))


def fold_dir(root: Path, fold: int) -> Path:
    """Fold ``fold``'s folder in a LocalStore folder."""
    return root / f"fold_{fold}"


def read_parent(root: Path) -> dict[str, Any] | None:
    """A LocalStore folder's ``parent.json``, or None when it has none (not a LocalStore folder, or not yet)."""
    path = Path(root) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


class LocalRunReader(StoredRun):
    """The ``RunReader`` of a finished LocalStore folder (``run.store.RunReader``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        parent = read_parent(self.root) if self.root.is_dir() else None
        if parent is None:
            raise NervesegError(f"{self.root} is not a LocalStore cross-validation folder (it has no {PARENT_FILE})")
        if parent.get("status") != FINISHED:
            raise NervesegError(
                f"{self.root} holds an unfinished cross-validation ({parent.get('status')}); finish it first"
            )
        self._parent = parent

    @property
    def run_id(self) -> str:
        return str(self.root)

    @property
    def name(self) -> str:
        return str(self._parent.get("name", self.root.name))

    @property
    def task(self) -> str:
        return str(self._parent.get("params", {}).get(names.TASK_PARAM, DEFAULT_TASK))

    @property
    def data_fingerprint(self) -> str:
        return str(self._parent.get(names.DATA_FINGERPRINT, ""))

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in json.loads((self.root / METRICS_FILE).read_text()).items()}

    def file(self, artifact: str, workdir: Path) -> Path | None:
        path = self.root / artifact
        return path if path.is_file() else None

    def fold_weights(self, workdir: Path) -> list[Path]:
        paths = []
        for k in range(self.config().folds):
            path = fold_dir(self.root, k) / names.weights_artifact(k)
            if not path.is_file():
                raise NervesegError(f"{self.root} has no weights for fold {k} ({path}); train it again in a new folder")
            fold_files.check_weights_file(path, f"fold {k}'s weights {path}", "train it again in a new folder")
            paths.append(path)
        return paths
