"""The tasks the chaos scenarios queue, by name, for worker subprocesses.

Installed only when TOOSIMPLEQ_TEST_CHAOS_APP=1 (see tests/settings.py): the
schedule would fire in any worker serving its queue. The test process never
imports this module: it stores the rows by name (tests/chaos.py).

Each run of a keyed task leaves an Execution row named "KEY run UUID", so
that runs are counted per key from any process, duplicates included.
"""

import os
import time
import uuid

from django_toosimple_q.decorators import register_task, schedule

from ..testapp.models import Execution

GATE_TIMEOUT = 300


def record_run(key):
    Execution.objects.create(key=f"{key} run {uuid.uuid4().hex}")


# Retried: a run that meets a database outage fails, and must be run again.
@register_task("chaos.work", queue="chaos", retries=5)
def work(key, seconds):
    time.sleep(seconds)
    record_run(key)
    return key


# retries=-1: only the limit on interruptions stops it.
@register_task("chaos.poison", queue="chaos", retries=-1)
def poison(key):
    """Kills its worker, as an out-of-memory kill or a crash in C code would."""
    record_run(key)
    os._exit(1)


@register_task("chaos.hold", queue="chaos")
def hold(key, gate):
    """Waits until the file ``gate`` exists; then records a run of ``key``.

    With no key it touches no database: it can end while the database is away.
    """
    deadline = time.monotonic() + GATE_TIMEOUT
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{gate} never opened")
        time.sleep(0.02)
    if key is not None:
        record_run(key)
    return key or "done"


# Every second, every occurrence: each due second must be queued once.
@schedule(cron="* * * * * *", catch_up=True, datetime_kwarg="when")
@register_task("chaos.tick", queue="chaos_tick")
def tick(when):
    return when
