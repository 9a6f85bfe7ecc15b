"""Task definitions and the registry that maps their names to them.

The decorators build these objects; the worker looks tasks up here by the
name stored on each TaskExec row.
"""

import datetime
import functools
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import conf, serialization
from .cron import Cron

tasks_registry = {}
schedules_registry = {}

# A schedule's default last_run: when it is first seen.
NOW = "now"

# What every database stores (PostgreSQL's integer and the columns'
# lengths): refused here, the same on all, rather than at each queue() by
# some only.
NAME_LENGTH = 1024
QUEUE_LENGTH = 255
PRIORITIES = (-(2**31), 2**31 - 1)
# A year: a longer first delay only makes sense as a mistake.
LONGEST_RETRY_DELAY = 365 * 24 * 3600


class Call(NamedTuple):
    """A call of a task to store: its arguments, and when it is due (None: now)."""

    args: tuple
    kwargs: dict
    due: datetime.datetime | None = None


class Task:
    """A registered function, callable as before, that can also be queued."""

    def __init__(
        self, func, *, name=None, queue="default", priority=0, unique=False, retries=0, retry_delay=0, timeout=None
    ):
        self.func = func
        # Only None takes the default: an empty name is a mistake to report.
        self.name = _qualified_name(func) if name is None else name
        self.queue_name = queue
        self.priority = priority
        self.unique = unique
        self.retries = retries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._validate()

    def _validate(self):
        if not isinstance(self.name, str) or not 0 < len(self.name) <= NAME_LENGTH:
            raise ImproperlyConfigured(
                f"Task name must be a string of 1 to {NAME_LENGTH} characters, not {_shown(self.name)}"
            )
        problem = (
            queue_problem(self.queue_name)
            or priority_problem(self.priority)
            or options_problem(self.retries, self.retry_delay, self.timeout)
        )
        if problem:
            raise ImproperlyConfigured(f"Task {self.name}: {problem}")

    def __repr__(self):
        return f"<Task {self.name}>"

    def queue(self, *args, due=None, **kwargs):
        """Store a call of this task for a worker to run.

        Returns the TaskExec, or False when the task is unique and the same
        call is already waiting. ``due`` (a datetime) delays it.
        """
        return self.enqueue(args, kwargs, due=due)

    def queue_many(self, calls, *, due=None):
        """Store many calls of this task at once, all or none: ``add.queue_many([(1, 2), (3, 4)])``.

        Each item of ``calls`` is a tuple of positional arguments, or a dict
        of keyword arguments. Returns, in order, what queue() would have
        returned for each.
        """
        return self.enqueue_many([Call(*_as_pair(call), due) for call in calls])

    def using(self, *, due=None, priority=None, queue=None):
        """The same task queued with other options: ``task.using(priority=9).queue(...)``."""
        return ConfiguredTask(self, due=due, priority=priority, queue=queue)

    def enqueue(self, args, kwargs, *, due=None, priority=None, queue=None):
        """queue() with its options apart; None options are the task's own."""
        [execution] = self.enqueue_many([Call(args, kwargs, due)], priority=priority, queue=queue)
        return execution

    def enqueue_many(self, calls, *, priority=None, queue=None):
        """queue_many() with its options apart, each call a ``Call``."""
        from . import store
        from .models import default_label

        executions = store.enqueue(
            self,
            calls,
            priority=self.priority if priority is None else priority,
            queue=self.queue_name if queue is None else queue,
        )
        if conf.IMMEDIATE:
            from .worker import Worker

            Worker(label=f"immediate-{default_label()}", schedules=False).run_now(executions)
        return executions


class ConfiguredTask:
    """A task with options fixed for its next ``queue()`` calls; see Task.using."""

    def __init__(self, task, *, due, priority, queue):
        problem = (queue is not None and queue_problem(queue)) or (priority is not None and priority_problem(priority))
        if problem:
            raise ValueError(f"Task {task.name}: {problem}")
        self.task = task
        self.due = due
        self.options = {"priority": priority, "queue": queue}

    def queue(self, *args, **kwargs):
        return self.task.enqueue(args, kwargs, due=self.due, **self.options)

    def queue_many(self, calls):
        return self.task.enqueue_many([Call(*_as_pair(call), self.due) for call in calls], **self.options)


def _as_pair(call):
    """The (args, kwargs) of an item of queue_many()."""
    if isinstance(call, (tuple, list)):
        return tuple(call), {}
    if isinstance(call, dict):
        return (), call
    raise TypeError(
        "queue_many() takes calls as tuples of positional arguments or dicts of keyword arguments, "
        f"not {type(call).__name__}: for a single argument x, write (x,)"
    )


class Schedule:
    """When a task is queued by itself, and with which arguments.

    ``last_run`` is taken as its previous run when it is first seen: by
    default that moment (the first run is the next occurrence); None runs it
    as soon as a worker starts, then on the cron. ``catch_up=True`` runs
    every occurrence missed while no worker ran, not only the latest.
    """

    def __init__(
        self,
        task,
        cron,
        *,
        name=None,
        args=(),
        kwargs=None,
        last_run=NOW,
        catch_up=False,
        queue=None,
        datetime_kwarg=None,
    ):
        self.task = task
        self.name = name or task.name
        try:
            self.cron = Cron(cron)
        except ImproperlyConfigured as error:
            raise ImproperlyConfigured(f"Schedule {self.name}: {error}") from None
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        # Refused here rather than when a worker queues it, where it would
        # fail at every tick.
        try:
            serialization.encode_call(self.args, self.kwargs)
        except serialization.NotSerializable as error:
            raise ImproperlyConfigured(f"Schedule {self.name}: {error}") from None
        if last_run is not NOW and last_run is not None and not isinstance(last_run, datetime.datetime):
            raise ImproperlyConfigured(f"Schedule {self.name}: last_run must be None or a datetime, not {last_run!r}")
        self.last_run = last_run
        self.catch_up = catch_up
        self.queue_name = queue or task.queue_name
        problem = queue_problem(self.queue_name)
        if problem:
            raise ImproperlyConfigured(f"Schedule {self.name}: {problem}")
        self.datetime_kwarg = datetime_kwarg
        if datetime_kwarg is not None and datetime_kwarg in self.kwargs:
            raise ImproperlyConfigured(f"Schedule {self.name}: {datetime_kwarg!r} is both in kwargs and datetime_kwarg")

    def __repr__(self):
        return f"<Schedule {self.name} {self.cron.expression!r}>"

    def queue(self, due):
        """Queue the task for the occurrence ``due``; the TaskExec, or False (unique)."""
        [execution] = self.queue_all([due])
        return execution

    def queue_all(self, due_times):
        """Queue the task once for each occurrence in ``due_times``, as queue_many() does.

        Each run is due at its occurrence, which operators read in the admin;
        one whose time has passed runs at once.
        """
        return self.task.enqueue_many([self._call(due) for due in due_times])

    def _call(self, due):
        """The Call of the run for the occurrence ``due``."""
        kwargs = dict(self.kwargs)
        if self.datetime_kwarg:
            kwargs[self.datetime_kwarg] = timezone.localtime(due) if timezone.is_aware(due) else due
        return Call(self.args, kwargs, due)


def task_of_row(task_name, backend):
    """The Task that runs the rows named ``task_name``, or None when the code no longer has it.

    A row queued through Django's task framework (``backend``, its alias)
    names the module path of a django.tasks Task: that Task, seen as one
    of ours (``backend.QueueableTask``).
    """
    if not backend:
        return tasks_registry.get(task_name)
    return _framework_tasks()(task_name)


@functools.cache
def _framework_tasks():
    """``backend.queueable``, imported once (asked for every row a worker runs); where neither django.tasks
    nor its backport is installed, a lookup that finds nothing."""
    try:
        from .backend import queueable
    except ImportError:
        return lambda task_name: None
    return queueable


def registered_task(func):
    """The Task that ``@register_task()`` attached to ``func``."""
    task = getattr(func, "_task", None)
    if not isinstance(task, Task):
        raise ImproperlyConfigured(f"@schedule must stand above @register_task(): {func!r} is not a registered task")
    return task


def register_schedule(schedule):
    """Add ``schedule`` to the registry; schedule names must be unique."""
    existing = schedules_registry.get(schedule.name)
    # A module imported again brings new Task objects: its schedules replace
    # their earlier selves. Anything else sharing a name is a mistake.
    if existing is not None and (
        existing.task is schedule.task or _qualified_name(existing.task.func) != _qualified_name(schedule.task.func)
    ):
        raise ImproperlyConfigured(
            f"Two schedules are named {schedule.name!r}: give each schedule of a task its own name, "
            "@schedule(cron, name='...')"
        )
    schedules_registry[schedule.name] = schedule
    return schedule


def register(task):
    """Add ``task`` to the registry; a name held by another function is an error."""
    existing = tasks_registry.get(task.name)
    # The same function imported again (a reload, a module imported under two
    # names) replaces itself; another function taking the name is a mistake.
    if existing is not None and _qualified_name(existing.func) != _qualified_name(task.func):
        raise ImproperlyConfigured(
            f"Task name {task.name!r} is already registered by {_qualified_name(existing.func)}; "
            f"{_qualified_name(task.func)} needs another name"
        )
    tasks_registry[task.name] = task
    return task


def _qualified_name(func):
    return f"{func.__module__}.{func.__qualname__}"


def queue_problem(queue):
    """What is wrong with ``queue`` as a queue name, or None."""
    if not isinstance(queue, str) or not 0 < len(queue) <= QUEUE_LENGTH:
        return f"queue must be a string of 1 to {QUEUE_LENGTH} characters, not {_shown(queue)}"
    return None


def priority_problem(priority):
    """What is wrong with ``priority``, or None."""
    low, high = PRIORITIES
    if not is_int(priority) or not low <= priority <= high:
        return f"priority must be an integer from {low} to {high}, not {priority!r}"
    return None


def options_problem(retries, retry_delay, timeout):
    """What is wrong with these options of a task (``register_task``'s, or a django.tasks ``@task``'s), or None."""
    if not is_int(retries) or retries < -1:
        return f"retries must be an integer >= -1, not {retries!r}"
    if (
        not isinstance(retry_delay, (int, float))
        or isinstance(retry_delay, bool)
        or not 0 <= retry_delay <= LONGEST_RETRY_DELAY  # nan is neither
    ):
        return f"retry_delay must be a number of seconds from 0 to {LONGEST_RETRY_DELAY} (a year), not {retry_delay!r}"
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout > 0):
        return f"timeout must be None or a number > 0, not {timeout!r}"
    return None


def _shown(value):
    """``value`` for an error message: a long string by its length."""
    if isinstance(value, str) and len(value) > 80:
        return f"{len(value)} characters"
    return repr(value)


def is_int(value):
    """Whether ``value`` is an int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
