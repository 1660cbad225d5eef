"""The tasks the pipeline runs: each one package here, named as the config's ``task`` field names it, whose
``TASK`` is its object behind ``tasks.base.Task``: ``nerve`` (the Kaggle ultrasound nerve set, the default),
``isbi2012`` (EM membrane segmentation, issue 10) and ``toy`` (bright blobs on noise: what a task costs).

Adding a task is adding its package: ``config.task_names()`` lists the packages (the config's ``task`` field is
checked against them) and ``get_task`` imports the one named, so no list of tasks exists to edit.
``cv_train.py``, ``submit.py`` and ``tune.py`` ask the returned object and never test the name themselves.
"""

from __future__ import annotations

import importlib

from nerveseg.config import task_names
from nerveseg.errors import NervesegError
from nerveseg.tasks.base import Task


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a one-line ``NervesegError`` listing the known ones."""
    known = task_names()
    if name not in known:
        raise NervesegError(f"task {name!r} is unknown; expected one of {', '.join(known)} (config field task)")
    return importlib.import_module(f"{__name__}.{name}").TASK


__all__ = ["Task", "get_task"]
