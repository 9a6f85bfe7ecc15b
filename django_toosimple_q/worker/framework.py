"""Running a row that Django's task framework queued, as Django runs a task.

The worker's executor hands such a row here: its Task is imported from the
row's ``task_name`` (its module path) and called with a TaskContext when it
takes one, as ``Task.call`` calls it, but an ``async def`` task on an event
loop of this thread (as the native API runs them). The outcome is stored by
the executor, as any other. Django's task_started is sent before the call,
task_finished once the outcome is stored, both with the backend's class as
sender.
"""

import datetime
import traceback
from typing import NamedTuple

from django.conf import settings

from ..backend import (
    STATUSES,
    TaskContext,
    TaskError,
    TaskResultStatus,
    chain_until,
    result_of,
    returned_json,
    task_backends,
    task_finished,
    task_of,
    task_started,
)
from ..models import TaskExec
from .coroutines import call
from .executor import preview
from .timeouts import TaskTimeout

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
    """A Run of ``claimed``; LookupError when its task is gone."""
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
        result = result_of(chain_until(execution), task_of(execution))
        sender = type(task_backends[claimed.backend])
    except Exception as error:  # an import error of the task's module, a backend no longer configured
        raise LookupError(f"Task {claimed.task_name!r} cannot be run here: {error}") from error
    return Run(result, sender)


def _datetime(value):
    """A datetime column as the driver returned it (SQLite: naive, in UTC), as Django reads it."""
    if value is None or value.tzinfo is not None or not settings.USE_TZ:
        return value
    return value.replace(tzinfo=datetime.timezone.utc)


class Run:
    """One run of a row, as Django runs a task: calling it returns the outcome to store;
    ``stored(outcome)``, once it is stored, sends task_finished."""

    def __init__(self, result, sender):
        self.result = result
        self.sender = sender
        self.error = None  # what the task raised

    def __call__(self):
        result = self.result
        task = result.task
        _send(task_started, self.sender, result)
        args = [TaskContext(task_result=result), *result.args] if task.takes_context else result.args
        try:
            value = call(task.func, args, result.kwargs)
        except TaskTimeout as error:
            self.error = error
            raise  # the executor words it, as for any task
        except BaseException as error:  # noqa: B036 - SystemExit and KeyboardInterrupt fail the task, not the worker
            self.error = error
            return _failure(error)
        try:
            value = returned_json(value)
        except (TypeError, ValueError) as error:
            self.error = error
            # Its side effects happened: running it again would repeat them.
            return {**_failure(error), "retries": 0}
        return {"state": States.SUCCEEDED, "result": value, "result_preview": preview(value)}

    def stored(self, outcome):
        """Send task_finished with the result as ``outcome``, now stored, leaves it.

        After a failure, from an ``except`` block of the task's exception:
        Django's logging of task_finished reads it there.
        """
        result = self.result
        status = STATUSES.get(outcome["state"], TaskResultStatus.FAILED)
        object.__setattr__(result, "status", status)
        object.__setattr__(result, "finished_at", outcome["finished"])
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", outcome.get("result"))
        if outcome.get("error_class"):
            result.errors.append(TaskError(exception_class_path=outcome["error_class"], traceback=outcome["error"]))
        if self.error is None:
            _send(task_finished, self.sender, result)
            return
        try:
            raise self.error
        except BaseException:  # noqa: B036 - raised again only to be handled here
            _send(task_finished, self.sender, result)




def _failure(error):
    """The outcome of a run that raised ``error``: its traceback, and its class for TaskError."""
    kind = type(error)
    return {
        "state": States.FAILED,
        "error": "".join(traceback.format_exception(error)),
        "error_class": f"{kind.__module__}.{kind.__qualname__}",
    }


def _send(signal, sender, result):
    """Send ``signal``; a receiver that raises is logged by Django, and changes nothing of the outcome."""
    signal.send_robust(sender, task_result=result)
