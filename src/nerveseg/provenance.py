"""Provenance of a run: which code (git commit, uncommitted changes), which machine and which library versions.

A score means little without them: a run trained from uncommitted code cannot be reproduced from its commit,
and timings depend on the device. Both stores record them (MLflow as tags of the parent and fold runs, a
LocalStore folder in ``parent.json`` and each fold's ``environment.json``), so they are core, not MLflow's.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from nerveseg.names import GIT_COMMIT_TAG
from nerveseg.paths import PROJ_ROOT


def git_state(root: Path = PROJ_ROOT) -> tuple[str, str]:
    """(commit, dirty) as tag strings: the HEAD commit or "none"/"unknown", and "true"/"false"/"unknown".

    A run trained from uncommitted code cannot be reproduced from its commit alone, hence the flag.
    """
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    if status.returncode != 0:
        return "unknown", "unknown"
    commit = head.stdout.strip() if head.returncode == 0 else "none"  # "none": a repository without commits
    return commit, "true" if status.stdout.strip() else "false"


def device_description() -> str:
    """What trains: "GPU x1: NVIDIA H100 80GB HBM3" or "CPU: " and :func:`cpu_description`; timings depend on it."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        try:
            name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", gpus[0].name)
        except (RuntimeError, ValueError):
            name = gpus[0].name
        return f"GPU x{len(gpus)}: {name}"
    return f"CPU: {cpu_description()}"


def cpu_description() -> str:
    """The CPU's name, generation and the cores this process may use: "AMD EPYC (family 26 model 2, 2 cores)".

    The numbers depend on it as well as the timings: TensorFlow's CPU kernels differ between CPU generations, so the
    same config, seed and data give other weights on another one. A cloud CPU's name can hide its generation (every
    EPYC reads "AMD EPYC"), hence the family and model numbers beside it.
    """
    info = _cpuinfo()
    model = info.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    family, number = info.get("cpu family"), info.get("model")
    generation = f"family {family} model {number}, " if family and number else ""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({generation}{cores} cores)"


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none: macOS, Windows)."""
    info: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return info
    for line in lines:
        if not line.strip():
            break  # the end of the first processor's block
        key, _, value = line.partition(":")
        info.setdefault(key.strip(), value.strip())
    return info


def environment_tags(root: Path = PROJ_ROOT) -> dict[str, str]:
    """Tags that say which code, machine and library versions produced a run."""
    import keras
    import tensorflow as tf

    commit, dirty = git_state(root)
    return {
        GIT_COMMIT_TAG: commit,
        "git_dirty": dirty,
        "device": device_description(),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "mlflow_version": _version("mlflow"),
        "python_version": platform.python_version(),
    }


def _version(package: str) -> str:
    """An installed package's version without importing it (the core never imports MLflow)."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
