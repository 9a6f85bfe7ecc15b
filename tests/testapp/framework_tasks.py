"""Tasks written with Django's task framework, for test_backend.

Not a tasks.py: workers import these by their module path, as they would a
project's. Each test runs them on Django's ImmediateBackend and on ours
(``task.using(backend=...)``). Our options go to a ``@register_task(...)``
under ``@task``, which every version reads (Django 6.0's ``@task`` takes
none); framework_options.py gives them to ``@task(...)``.
"""

import asyncio
import os
import signal
import threading
import time

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

from django_toosimple_q.decorators import register_task

from .models import Execution


class TaskFailure(Exception):
    """An error of this module, for its class path."""


@task
def add(a, b=0):
    return a + b


@task
async def async_add(a, b=0):
    await asyncio.sleep(0)
    return a + b


@task
async def async_thread_name():
    return threading.current_thread().name


@task
def echo(*args, **kwargs):
    return [args, kwargs]


@task(takes_context=True)
def describe(context, value):
    """What the context tells of this run."""
    return {"id": context.task_result.id, "attempt": context.attempt, "value": value}


@task
def fail(message="boom"):
    raise TaskFailure(message)


@task
def exit_task(code=3):
    raise SystemExit(code)


@task
def keyboard_interrupt():
    raise KeyboardInterrupt


@task
def unstorable():
    return {1, 2}


@task
def record(key):
    Execution.objects.create(key=key)
    return key


@task
@register_task(retries=2)
def flaky(key):
    """Fails on its first run for ``key``, then succeeds."""
    _, created = Execution.objects.get_or_create(key=key)
    if created:
        raise TaskFailure("first run fails")
    return "second run"


@task
@register_task(retries=2)
def unstorable_retried(key):
    """Runs once per key: a result that cannot be stored is not retried."""
    Execution.objects.create(key=key)
    return object()


@task
@register_task(retries=1)
def always_fails():
    raise TaskFailure("again")


@task(takes_context=True)
@register_task(retries=1)
def changes_its_arguments(context, items, options):
    """Returns what it was given, once it changed it; fails its first attempt."""
    given = [list(items), dict(options)]
    items.append("changed")
    options["changed"] = True
    context.task_result.args.append("changed")
    if context.attempt == 1:
        raise TaskFailure("first attempt")
    return given


@task(takes_context=True)
def killed_on_first_attempt(context, pid_file):
    """Its first run writes the worker's pid to ``pid_file`` and waits to be killed; the next one returns."""
    if context.attempt == 1:
        with open(pid_file + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.rename(pid_file + ".tmp", pid_file)
        for _ in range(600):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGKILL)  # the test did not: do it for it
    return context.attempt


@task
@register_task(unique=True)
def unique_echo(value):
    return value


@task
@register_task(timeout=0.3)
def naps(seconds):
    return sleep_in_steps(seconds)


def sleep_in_steps(seconds):
    """Sleep for ``seconds`` at most, in short steps: a timeout ends it sooner."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "woke up"


# Set by the test that runs stuck, so that its thread ends with it.
release_stuck = threading.Event()


@task
@register_task(timeout=0.3)
def stuck():
    """Blocks in C code (a lock's wait), where no exception reaches it: its thread is abandoned."""
    release_stuck.wait(30)
    return "late"
