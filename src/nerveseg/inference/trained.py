"""What prediction takes from a finished cross-validation: its fold models and its post-processing decision.

Defined here, below the tasks, so that the generic stages (serving, the ensemble) need nothing from ``tasks``;
``tasks.base`` re-exports both as part of the task interface.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nerveseg.config import TrainConfig
from nerveseg.errors import NervesegError


class Decision(Protocol):
    """The post-processing chosen on the out-of-fold predictions, as a submission applies it."""

    def to_json(self) -> dict[str, Any]:
        """What ``postprocessing.json`` holds; the task's ``decision_from_json`` reads it back."""

    def params(self) -> dict[str, Any]:
        """The settings as flat params of the submission run."""

    def metrics(self) -> dict[str, float]:
        """Its OOF scores (raw and post-processed) as flat metrics, those that are known."""

    def describe(self) -> str:
        """One line for the terminal."""


@dataclass(frozen=True)
class TrainedModels:
    """One CV run's config and its fold weights, as a submission uses them."""

    config: TrainConfig
    weights_paths: Sequence[Path]


def check_runs(runs: Sequence[TrainedModels], task: str) -> None:
    """One-line errors for no runs, or runs of another task than the segmenter's ``task``."""
    if not runs:
        raise NervesegError("a Segmenter needs at least one run's fold models")
    tasks = {run.config.task for run in runs}
    if tasks != {task}:
        raise NervesegError(f"these runs belong to task(s) {sorted(tasks)}; this segmenter predicts task {task}")
