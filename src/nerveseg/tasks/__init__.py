"""The tasks the pipeline runs, one object each behind ``tasks.base.Task``: ``nerve`` (the Kaggle
ultrasound nerve set, the default) and ``isbi2012`` (EM membrane segmentation, issue 10).

``get_task(config.task)`` is the only place that maps a task name to its code; ``cv_train.py``,
``submit.py`` and ``tune.py`` ask the returned object and never test the name themselves.
"""

from __future__ import annotations

from nerveseg.errors import NervesegError
from nerveseg.tasks.base import Task


def _nerve() -> Task:
    from nerveseg.tasks.nerve import NerveTask

    return NerveTask()


def _isbi2012() -> Task:
    from nerveseg.tasks.isbi_task import IsbiTask

    return IsbiTask()


TASKS = {"nerve": _nerve, "isbi2012": _isbi2012}


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a one-line ``NervesegError`` listing the known ones."""
    try:
        factory = TASKS[name]
    except (KeyError, TypeError):
        raise NervesegError(
            f"task {name!r} is unknown; expected one of {', '.join(TASKS)} (config field task)"
        ) from None
    return factory()


__all__ = ["TASKS", "Task", "get_task"]
