"""Running a row that Django's task framework queued, as Django runs a task.

The worker's executor hands such a row here: its Task is imported from the
row's ``task_name`` (its module path) and called with a TaskContext when it
takes one, through ``Task.call``, or for an ``async def`` task on an event
loop of this thread (as the native API runs them); Django's task_started and
task_finished signals are sent with the backend's class as sender. The
outcome is stored by the executor, as any other.
"""

import datetime
import logging
import traceback
from inspect import iscoroutinefunction
from typing import NamedTuple

from django.conf import settings
from django.utils import timezone

from ..backend import (
    TaskContext,
    TaskError,
    TaskResultStatus,
    chain_until,
    normalize_json,
    result_of,
    stored_json,
    task_backends,
    task_finished,
    task_started,
)
from ..models import TaskExec
from .coroutines import run_coroutine
from .executor import preview

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States


class Running(NamedTuple):
    """A claimed row as it now stands, read as ``result_of()`` reads a TaskExec: making one costs less."""

    pk: int
    task_name: str
    args: list
    kwargs: dict
    queue: str
    priority: int
    backend: str
    attempt: int
    created: datetime.datetime
    started: datetime.datetime
    run_after: datetime.datetime | None
    worker_id: int
    state: str = States.PROCESSING
    finished: None = None
    error_class: str = ""
    error: str = ""
    result: None = None


def runner(claimed, worker_id):
    """A function that runs ``claimed`` and returns its outcome; LookupError when its task is gone."""
    execution = Running(
        claimed.id,
        claimed.task_name,
        claimed.args,
        claimed.kwargs,
        claimed.queue,
        claimed.priority,
        claimed.backend,
        claimed.attempt,
        _datetime(claimed.created),
        _datetime(claimed.started),
        _datetime(claimed.run_after),
        worker_id,
    )
    try:
        result = result_of(chain_until(execution))
        sender = type(task_backends[claimed.backend])
    except Exception as error:  # an import error of the task's module, a backend no longer configured
        raise LookupError(f"Task {claimed.task_name!r} cannot be run here: {error}") from error
    return lambda: _run(result, sender)


def _datetime(value):
    """A datetime column as the driver returned it (SQLite: naive, in UTC), as Django reads it."""
    if value is None or not settings.USE_TZ or timezone.is_aware(value):
        return value
    return timezone.make_aware(value, datetime.timezone.utc)


def _run(result, sender):
    task = result.task
    _send(task_started, sender, result)
    args = [TaskContext(task_result=result), *result.args] if task.takes_context else result.args
    try:
        value = _call(task, args, result.kwargs)
    except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt fail the task, not the worker
        return _failed(result, sender, error)
    try:
        value = stored_json(normalize_json(value))
    except (TypeError, ValueError) as error:
        # Its side effects happened: running it again would repeat them.
        return {**_failed(result, sender, error), "retries": 0}
    _finished(result, TaskResultStatus.SUCCESSFUL)
    object.__setattr__(result, "_return_value", value)
    _send(task_finished, sender, result)
    return {
        "state": States.SUCCEEDED,
        "result": value,
        "result_preview": preview(value),
    }


def _call(task, args, kwargs):
    if iscoroutinefunction(task.func):
        return run_coroutine(task.func(*args, **kwargs))
    return task.call(*args, **kwargs)


def _failed(result, sender, error):
    """The outcome of a run that raised ``error``; called in its ``except`` block, where
    Django's logging of task_finished reads the exception."""
    kind = type(error)
    text = "".join(traceback.format_exception(error))
    error_class = f"{kind.__module__}.{kind.__qualname__}"
    result.errors.append(TaskError(exception_class_path=error_class, traceback=text))
    _finished(result, TaskResultStatus.FAILED)
    _send(task_finished, sender, result)
    return {"state": States.FAILED, "error": text, "error_class": error_class}


def _send(signal, sender, result):
    """Send ``signal``; a receiver that raises is logged, and changes nothing of the outcome."""
    for receiver, response in signal.send_robust(sender, task_result=result):
        if isinstance(response, Exception):
            logger.error("%r, a receiver of the task's signal, raised", receiver, exc_info=response)


def _finished(result, status):
    object.__setattr__(result, "status", status)
    object.__setattr__(result, "finished_at", timezone.now())
