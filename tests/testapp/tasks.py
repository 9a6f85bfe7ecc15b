"""The tasks the queue and worker tests run (workers find them by autodiscovery).

Explicit names keep the rows readable and the tests independent of this
module's path. No schedules here: one would fire in every worker of every test.
"""

import asyncio
import logging
import sys
import threading
import time
import uuid

from django.db import IntegrityError, transaction

from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec

from .models import Execution

# Made at import, before any worker replaces sys.stderr, as a project's
# LOGGING would: its lines must still land in the running task's own stderr.
chatter_logger = logging.getLogger("tests.testapp.chatter")
chatter_logger.propagate = False
chatter_logger.setLevel(logging.INFO)
if not chatter_logger.handlers:
    chatter_logger.addHandler(logging.StreamHandler(sys.stderr))

# In-process synchronisation between a test and the tasks its worker runs.
_events = {}
_barriers = {}
_lock = threading.Lock()


def event(name):
    """The threading.Event called ``name``, shared by a test and its tasks."""
    with _lock:
        return _events.setdefault(name, threading.Event())


def barrier(name, parties):
    """The threading.Barrier called ``name``, for ``parties`` threads."""
    with _lock:
        if name not in _barriers:
            _barriers[name] = threading.Barrier(parties, timeout=20)
        return _barriers[name]


@register_task("tests.record")
def record(key):
    """Insert Execution(key): a second run of the same key leaves a second row."""
    try:
        Execution.objects.create(key=key)
    except IntegrityError:
        # The unique key refused a second run: leave a trace that counts.
        Execution.objects.create(key=f"{key} again {uuid.uuid4()}")
        raise
    return key


@register_task("tests.echo")
def echo(value):
    return value


@register_task("tests.echo_kwargs")
def echo_kwargs(**kwargs):
    return kwargs


@register_task("tests.add")
def add(a, b=0):
    return a + b


@register_task("tests.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@register_task("tests.say")
def say(text):
    print(text)
    return len(text)


@register_task("tests.fail")
def fail(message="boom"):
    raise ValueError(message)


@register_task("tests.retried", retries=3, retry_delay=10)
def retried():
    raise ValueError("retry me")


@register_task("tests.retried_forever", retries=-1)
def retried_forever():
    raise ValueError("again and again")


@register_task("tests.flaky", retries=2)
def flaky(key):
    """Fails on its first run for ``key``, then succeeds."""
    _, created = Execution.objects.get_or_create(key=key)
    if created:
        raise ValueError("first run fails")
    return "second run"


@register_task("tests.changes_its_arguments", retries=1)
def changes_its_arguments(key, items, options):
    """Changes the arguments it was given; fails its first run for ``key``, then returns them as given."""
    given = [list(items), dict(options)]
    items.append("changed")
    options["changed"] = True
    _, created = Execution.objects.get_or_create(key=key)
    if created:
        raise ValueError("first run fails")
    return given


@register_task("tests.unique", unique=True)
def unique(*args, **kwargs):
    return list(args)


@register_task("tests.unique_retried", unique=True, retries=1, retry_delay=60)
def unique_retried(value):
    raise ValueError(value)


@register_task("tests.configured", queue="reports", priority=5)
def configured(value=None):
    return value


@register_task("tests.remind")
def remind(due):
    """A task with its own ``due`` argument, queued through using()."""
    return due


@register_task("tests.unstorable")
def unstorable(kind):
    """An outcome that cannot be stored (the NUL ones: not on PostgreSQL)."""
    if kind == "set":
        return {1, 2}
    if kind == "object":
        return object()
    if kind == "nul result":
        return "nul\x00byte"
    print("nul\x00byte")
    return "nul output"


@register_task("tests.unstorable_retried", retries=2)
def unstorable_retried(kind):
    """Returns what cannot be stored, after a side effect that must happen once."""
    Execution.objects.create(key=f"unstorable {kind}")
    return unstorable(kind)


@register_task("tests.nested")
def nested(depth):
    value = []
    for _ in range(depth):
        value = [value]
    return value


@register_task("tests.async_echo")
async def async_echo(value):
    """Awaits, prints, and uses the ORM, as an async view would."""
    await asyncio.sleep(0)
    print(f"async {value} on {threading.current_thread().name}")
    await Execution.objects.acreate(key=f"async {value}")
    return value


@register_task("tests.async_fail")
async def async_fail():
    await asyncio.sleep(0)
    raise ValueError("async boom")


@register_task("tests.exit")
def exit_task(code=3):
    sys.exit(code)


@register_task("tests.keyboard_interrupt")
def keyboard_interrupt():
    raise KeyboardInterrupt


@register_task("tests.wait_for_event")
def wait_for_event(name):
    if not event(name).wait(timeout=20):
        raise TimeoutError(f"event {name} never came")
    return name


@register_task("tests.rendezvous")
def rendezvous(name, parties):
    """Returns once ``parties`` tasks are running at the same time (else fails)."""
    barrier(name, parties).wait()
    return threading.current_thread().name


@register_task("tests.chatter")
def chatter(marker, lines, barrier_name, parties):
    """Writes ``marker`` lines by every route, interleaved with other tasks."""
    barrier(barrier_name, parties).wait()
    for i in range(lines):
        print(f"{marker} print {i}")
        sys.stdout.write(f"{marker} write {i}\n")
        sys.stderr.write(f"{marker} stderr {i}\n")
        chatter_logger.info("%s log %s", marker, i)
        time.sleep(0)  # let the other threads write in between
    return marker


@register_task("tests.count_running")
def count_running():
    """How many executions are PROCESSING as it runs, itself included."""
    return TaskExec.objects.filter(state=TaskExec.States.PROCESSING).count()


@register_task("tests.print_lots")
def print_lots(characters):
    chunk = "x" * 1024
    for _ in range(characters // len(chunk)):
        sys.stdout.write(chunk)


@register_task("tests.leave_transaction_open")
def leave_transaction_open(key):
    """Writes in a transaction it never ends, as a task that forgot to commit."""
    transaction.set_autocommit(False)
    Execution.objects.create(key=key)
    return key
