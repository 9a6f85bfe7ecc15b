"""A backend for Django's own task framework: code written with ``django.tasks`` runs on our workers.

    TASKS = {"default": {"BACKEND": "django_toosimple_q.backend.TaskBackend", "QUEUES": []}}

A call is one TaskExec row, as ``queue()`` stores it. Its result id is the id
of the call's first execution: a retry, or a run after an interruption, adds
an attempt to the same result (``get_result`` follows ``replaced_by``).

Django 6.0 and later bring ``django.tasks``; Django 5.2 takes the
``django-tasks`` backport (``pip install django-toosimple-q[tasks]``).

Backends are built and tasks validated as task modules are imported: the
models are imported only when a task is queued or a result read.
"""

import dataclasses
import functools
import json
import re
from typing import NamedTuple

from django.apps import apps
from django.core import checks
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from . import registry

try:
    from django.tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task as FrameworkTask
    from django.tasks.base import TaskError
    from django.tasks.exceptions import TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2: the backport
    from django_tasks import TaskContext, TaskResult, TaskResultStatus, task_backends
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task as FrameworkTask
    from django_tasks.base import TaskError
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued, task_finished, task_started
    from django_tasks.utils import normalize_json

try:
    from django.tasks.exceptions import InvalidTask
except ImportError:
    from django_tasks.exceptions import InvalidTaskError as InvalidTask

__all__ = [
    "Task",
    "TaskBackend",
    "TaskContext",
    "TaskError",
    "TaskResultStatus",
    "task_backends",
    "task_finished",
    "task_started",
]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Task(FrameworkTask):
    """Django's Task, with what our worker adds: ``@task(retries=3, retry_delay=10, unique=True, timeout=60)``.

    Django 6.1 and the backport pass these to the backend's task class.
    Django 6.0 does not: there, a ``@register_task(...)`` under ``@task``
    gives them.
    """

    retries: int = 0  # failed runs queued again (-1: forever)
    retry_delay: float = 0  # seconds before the first retry, doubling each time
    unique: bool = False  # a call already waiting is not queued twice
    timeout: float | None = None  # seconds a run may take (None: TOOSIMPLEQ_TASK_TIMEOUT)


class Options(NamedTuple):
    """Our options of a django.tasks Task, as ``register_task`` takes them."""

    unique: bool = False
    retries: int = 0
    retry_delay: float = 0
    timeout: float | None = None


class Definition(NamedTuple):
    """What the queue reads of a task: as a registered task has it."""

    name: str
    unique: bool
    retries: int
    retry_delay: float
    timeout: float | None


# A result id is the primary key of the call's first execution.
RESULT_ID = re.compile(r"[0-9]{1,18}")


class TaskBackend(BaseTaskBackend):
    task_class = Task
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def validate_task(self, task):
        super().validate_task(task)
        given, registered = _given_options(task)
        if registered is not None and given != Options():
            raise InvalidTask(
                f"{task.module_path}: give retries, retry_delay, unique and timeout either to @task(...) "
                "or to the @register_task(...) under it, not to both"
            )
        problem = registry.options_problem(given.retries, given.retry_delay, given.timeout)
        if problem:
            raise InvalidTask(problem)

    def enqueue(self, task, args, kwargs):
        from .models import TaskExec, dedup_key
        from .serialization import encode_call

        self.validate_task(task)
        # Django's own errors for what its results cannot hold.
        args, kwargs = normalize_json(args), normalize_json(kwargs)
        call = registry.Call(stored_json(args), stored_json(kwargs), task.run_after)
        while True:
            [execution] = _enqueue_many(task, [call])
            if execution is not False:
                break
            # A unique task's same call waits: its result stands for this one,
            # unless a worker took it meanwhile (then this call is queued).
            key = dedup_key(task.module_path, *encode_call(call.args, call.kwargs))
            waiting = TaskExec.objects.filter(dedup_key=key).first()
            if waiting is not None:
                return stored_result(chain_through(waiting))
        result = TaskResult(
            task=task,
            id=str(execution.pk),
            status=TaskResultStatus.READY,
            enqueued_at=execution.created,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id):
        from .models import TaskExec

        first = None
        if isinstance(result_id, str) and RESULT_ID.fullmatch(result_id):
            first = TaskExec.objects.filter(pk=int(result_id), backend=self.alias, attempt=1).first()
        if first is None:
            raise TaskResultDoesNotExist(result_id)
        return stored_result(chain_from(first))

    def check(self, **kwargs):
        if apps.is_installed("django_toosimple_q"):
            return []
        return [
            checks.Error(
                f"The task backend {self.alias!r} ({type(self).__module__}.{type(self).__qualname__}) "
                "needs django_toosimple_q in INSTALLED_APPS",
                hint="Add 'django_toosimple_q' to INSTALLED_APPS and run migrate.",
                id="toosimpleq.E007",
            )
        ]


def _given_options(task):
    """The options given to ``@task(...)``, and those of the ``@register_task(...)`` under it (None: none)."""
    given = Options(task.unique, task.retries, task.retry_delay, task.timeout) if isinstance(task, Task) else Options()
    registered = getattr(task.func, "_task", None)
    if not isinstance(registered, registry.Task):
        return given, None
    return given, Options(registered.unique, registered.retries, registered.retry_delay, registered.timeout)


def _definition(task):
    """What the queue reads of ``task``: its options from ``@task(...)``, or from ``@register_task(...)`` (Django 6.0)."""
    given, registered = _given_options(task)
    return Definition(task.module_path, *(given if registered is None else registered))


def _enqueue_many(task, calls):
    """Store ``calls`` of ``task`` (``registry.Call``s of normalized JSON): their TaskExecs, or False (unique)."""
    from . import store

    return store.enqueue(
        _definition(task),
        calls,
        priority=task.priority,
        queue=task.queue_name,
        backend=task.backend,
        run_after=task.run_after,
    )


class QueueableTask(registry.Task):
    """A django.tasks Task seen as one of ours: what schedules queue, and retries, recovery, timeouts and requeue read.

    Its calls are queued as ``enqueue()`` queues them. Django's results hold
    JSON: the arguments go as Django's DjangoJSONEncoder writes them (a
    schedule's ``datetime_kwarg`` as ISO 8601 text).
    """

    def __init__(self, task):
        definition = _definition(task)
        super().__init__(
            task.func,
            name=definition.name,
            queue=task.queue_name,
            priority=task.priority,
            unique=definition.unique,
            retries=definition.retries,
            retry_delay=definition.retry_delay,
            timeout=definition.timeout,
        )
        self.framework_task = task

    def enqueue_many(self, calls, *, priority=None, queue=None):
        task = self.framework_task.using(priority=priority, queue_name=queue)
        return _enqueue_many(
            task, [registry.Call(_encoded_by_django(args), _encoded_by_django(kwargs), due) for args, kwargs, due in calls]
        )


def queueable(module_path):
    """The django.tasks Task at ``module_path`` as a QueueableTask; None when the code no longer has it."""
    try:
        return _queueable(module_path)
    except Exception:  # not importable: the worker that meets its rows says why, and marks them INVALID
        return None


@functools.lru_cache(maxsize=256)
def _queueable(module_path):
    return QueueableTask(_framework_task(module_path))


def _encoded_by_django(value):
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


# What normalize_json returns as it is, and JSON reads back as itself.
PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})


def returned_json(value):
    """A task's return ``value`` as Django's result holds it and the database gives it back.

    Django's own errors (TypeError, ValueError) for what its results cannot hold.
    """
    if type(value) in PLAIN_SCALARS:
        return value  # most return values: the worker asks for each row it runs
    return stored_json(normalize_json(value))


def stored_json(value):
    """What the database gives back of normalized JSON ``value``: keys become strings, as in any JSON column."""
    if not isinstance(value, (dict, list)):
        return value  # a scalar, as most results are, reads back as itself
    return json.loads(json.dumps(value))


# How each state of an execution reads as the status of its result.
STATUSES = {
    "SLEEPING": TaskResultStatus.READY,
    "QUEUED": TaskResultStatus.READY,
    "PROCESSING": TaskResultStatus.RUNNING,
    "SUCCEEDED": TaskResultStatus.SUCCESSFUL,
}


WAITING_OR_RUNNING = ("SLEEPING", "QUEUED", "PROCESSING")


def chain_from(first):
    """The executions of a call, from its ``first`` one along ``replaced_by``."""
    from .models import TaskExec

    chain = [first]
    while chain[-1].replaced_by_id is not None:
        following = TaskExec.objects.filter(pk=chain[-1].replaced_by_id).first()
        if following is None:
            break
        chain.append(following)
    return chain


def chain_until(execution):
    """The executions of a call up to ``execution``, the first one first."""
    if execution.attempt == 1:
        return [execution]  # most executions: the worker asks for each row it runs
    from .models import TaskExec

    chain = [execution]
    while chain[0].attempt > 1:
        previous = TaskExec.objects.filter(replaced_by=chain[0].pk).first()
        if previous is None:
            break
        chain.insert(0, previous)
    return chain


def chain_through(execution):
    """Every execution of ``execution``'s call."""
    return chain_from(chain_until(execution)[0])


def stored_result(chain):
    """The TaskResult of a call whose executions are the TaskExecs ``chain``.

    A result outlives its task: when the code no longer has it, a stand-in
    takes its place.
    """
    try:
        task = task_of(chain[0])
    except ImportError:
        task = _stand_in(chain[0])
    return result_of(chain, task)


def result_of(chain, task):
    """The TaskResult of ``task``'s call whose executions are ``chain`` (TaskExecs, or what reads as them), as they stand."""
    first, last = chain[0], chain[-1]
    attempts = [execution for execution in chain if execution.started is not None]
    status = STATUSES.get(last.state, TaskResultStatus.FAILED)
    return _read_back(
        task=task,
        id=str(first.pk),
        status=status,
        enqueued_at=first.created,
        started_at=attempts[0].started if attempts else None,
        last_attempted_at=attempts[-1].started if attempts else None,
        finished_at=last.finished if last.state not in WAITING_OR_RUNNING else None,
        args=first.args,
        kwargs=first.kwargs,
        backend=first.backend,
        errors=[
            TaskError(exception_class_path=execution.error_class, traceback=execution.error)
            for execution in chain
            if execution.error_class
        ],
        worker_ids=[str(execution.worker_id) for execution in attempts],
        _return_value=last.result if status == TaskResultStatus.SUCCESSFUL else None,
    )


def _read_back(**fields):
    """``TaskResult(**fields)`` for args and kwargs read back from a row, and ``_return_value``.

    Those are the JSON that enqueue() normalized: TaskResult() would
    normalize them again (its __post_init__), at every row a worker runs.
    """
    result = object.__new__(TaskResult)
    for name, value in fields.items():
        object.__setattr__(result, name, value)
    return result


def task_of(execution):
    """The Task that queued ``execution``, with the options it was queued with.

    ImportError when the code no longer has it.
    """
    return _task(execution.task_name, execution.priority, execution.queue, execution.run_after, execution.backend)


# Tasks are frozen, and workers build one for each row they run.
@functools.lru_cache(maxsize=256)
def _task(module_path, priority, queue_name, run_after, backend):
    task = _framework_task(module_path)
    return dataclasses.replace(task, priority=priority, queue_name=queue_name, run_after=run_after, backend=backend)


@functools.lru_cache(maxsize=256)
def _framework_task(module_path):
    task = import_string(module_path)
    if not isinstance(task, FrameworkTask):
        raise ImportError(f"{module_path} is not a django.tasks Task")
    return task


def _stand_in(execution):
    """A Task standing for ``execution``'s, which the code no longer has: it has its module path, and runs nothing."""
    module, _, qualname = execution.task_name.rpartition(".")
    missing = f"{execution.task_name} is no longer in the code"

    def removed(*args, **kwargs):
        raise ImportError(missing)

    removed.__module__, removed.__qualname__, removed.__name__ = module, qualname, qualname
    return Task(
        func=removed,
        priority=execution.priority,
        queue_name=execution.queue,
        run_after=execution.run_after,
        backend=execution.backend,
    )
