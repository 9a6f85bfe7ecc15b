"""Task definitions and the registry that maps their names to them.

The decorators build these objects; the worker looks tasks up here by the
name stored on each TaskExec row.
"""

import functools

from django.core.exceptions import ImproperlyConfigured

tasks_registry = {}


class Task:
    """A registered function, callable as before, that can also be queued."""

    def __init__(self, func, *, name=None, queue="default", priority=0, unique=False, retries=0, retry_delay=0):
        self.func = func
        self.name = name or _default_name(func)
        self.queue_name = queue
        self.priority = priority
        self.unique = unique
        self.retries = retries
        self.retry_delay = retry_delay
        self._validate()
        functools.update_wrapper(self, func)

    def _validate(self):
        if not isinstance(self.name, str) or not self.name:
            raise ImproperlyConfigured(f"Task name must be a non-empty string, not {self.name!r}")
        if not isinstance(self.queue_name, str) or not self.queue_name:
            raise ImproperlyConfigured(f"Task {self.name}: queue must be a non-empty string, not {self.queue_name!r}")
        if not _is_int(self.priority):
            raise ImproperlyConfigured(f"Task {self.name}: priority must be an integer, not {self.priority!r}")
        if not _is_int(self.retries) or self.retries < -1:
            raise ImproperlyConfigured(f"Task {self.name}: retries must be an integer >= -1, not {self.retries!r}")
        if not isinstance(self.retry_delay, (int, float)) or self.retry_delay < 0:
            raise ImproperlyConfigured(f"Task {self.name}: retry_delay must be a number >= 0, not {self.retry_delay!r}")

    def __call__(self, *args, **kwargs):
        return self.func(*args, **kwargs)

    def __repr__(self):
        return f"<Task {self.name}>"

    def queue(self, *args, due=None, **kwargs):
        """Store a call of this task for a worker to run.

        Returns the TaskExec, or False when the task is unique and the same
        call is already waiting. ``due`` (an aware datetime) delays it.
        """
        return self.enqueue(args, kwargs, due=due)

    def using(self, *, due=None, priority=None, queue=None):
        """The same task queued with other options: ``task.using(priority=9).queue(...)``."""
        return ConfiguredTask(self, due=due, priority=priority, queue=queue)

    def enqueue(self, args, kwargs, *, due=None, priority=None, queue=None):
        from .models import TaskExec

        return TaskExec.objects.enqueue(
            self,
            args,
            kwargs,
            due=due,
            priority=self.priority if priority is None else priority,
            queue=self.queue_name if queue is None else queue,
        )


class ConfiguredTask:
    """A task with options fixed for its next ``queue()`` calls; see Task.using."""

    def __init__(self, task, **options):
        self.task = task
        self.options = options

    def queue(self, *args, **kwargs):
        return self.task.enqueue(args, kwargs, **self.options)


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


def _default_name(func):
    if "<locals>" in func.__qualname__:
        raise ImproperlyConfigured(
            f"{func.__qualname__} is defined in a local scope: give it a name, "
            "@register_task('a_unique_name'), so that workers can find it"
        )
    return _qualified_name(func)


def _qualified_name(func):
    return f"{func.__module__}.{func.__qualname__}"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)
