"""Helpers for testing tasks: the immediate mode, running what was queued, and listing it.

Inside a ``TestCase`` (a transaction), the worker runs the tasks on the
calling thread and connection; these helpers make that one line.
"""

from django.test import override_settings

from .models import TaskExec
from .registry import registered_task
from .worker import Worker


def immediate():
    """Within this block (or the test it decorates), ``queue()`` runs the task at once.

    The execution is stored with its outcome, as a worker would have left
    it; a task due later is stored SLEEPING, not run. Same as the setting
    ``TOOSIMPLEQ_IMMEDIATE = True``.
    """
    return override_settings(TOOSIMPLEQ_IMMEDIATE=True)


def run_queued(*, queues=(), excluded_queues=(), schedules=False, max_tasks=None):
    """Run the waiting tasks that are due, until none is left; returns the executions run, in the order they ran.

    What the tasks queue without delay (their retries, other tasks) runs too.
    ``schedules=True`` also queues the schedules that are due.
    """
    worker = Worker(
        queues=queues,
        excluded_queues=excluded_queues,
        until_done=True,
        max_tasks=max_tasks,
        schedules=schedules,
        label="run_queued",
    )
    worker.run()
    # Claim order breaks the ties of a frozen clock.
    return list(TaskExec.objects.filter(worker=worker.status).order_by("started", "-priority", "due", "id"))


def queued(task=None):
    """The executions waiting to run (QUEUED, or SLEEPING until their due time), oldest first.

    ``task``: only those of this task (the registered function, or its name).
    """
    waiting = TaskExec.objects.filter(state__in=TaskExec.WAITING_STATES).order_by("created", "id")
    if task is not None:
        waiting = waiting.filter(task_name=task if isinstance(task, str) else registered_task(task).name)
    return waiting
