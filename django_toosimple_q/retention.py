"""Deleting old executions: ``manage.py prune_tasks``, and automatic retention.

Automatic retention (TOOSIMPLEQ_RETENTION) is a built-in schedule: however
many workers evaluate it, the schedules' compare-and-set queues each run
once, and a worker thread runs it as any task.
"""

import datetime
import logging
import re

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from . import conf
from .models import TaskExec, prune_executions, prune_workers
from .registry import Schedule, Task, register, register_schedule

logger = logging.getLogger("django_toosimple_q")

TASK_NAME = "toosimpleq.retention"

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(value):
    """An age as a timedelta: a timedelta, seconds, or text such as "90s", "10m", "12h", "7d", "2w"."""
    if isinstance(value, datetime.timedelta):
        age = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        age = datetime.timedelta(seconds=value)
    else:
        match = AGE.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"an age is a number and a unit (s, m, h, d, w), like 7d or 12h, not {value!r}")
        age = datetime.timedelta(seconds=float(match[1]) * UNITS[match[2]])
    if age <= datetime.timedelta(0):
        raise ValueError(f"an age must be more than nothing, not {value!r}")
    return age


def retention_ages():
    """TOOSIMPLEQ_RETENTION as {state: timedelta}; ImproperlyConfigured when it is not one."""
    ages = {}
    for state, age in (conf.RETENTION or {}).items():
        if state not in TaskExec.FINISHED_STATES:
            raise ImproperlyConfigured(
                f"TOOSIMPLEQ_RETENTION: {state!r} is not a finished state ({', '.join(TaskExec.FINISHED_STATES)})"
            )
        try:
            ages[state] = parse_age(age)
        except ValueError as error:
            raise ImproperlyConfigured(f"TOOSIMPLEQ_RETENTION[{state!r}]: {error}") from None
    return ages


def apply_retention():
    """Delete what TOOSIMPLEQ_RETENTION no longer keeps; the stopped workers at its longest age."""
    ages = retention_ages()
    now = timezone.now()
    deleted = {}
    for state, age in ages.items():
        deleted.update(prune_executions(now - age, states=[state]))
    workers = prune_workers(now - max(ages.values())) if ages else 0
    logger.info("retention: deleted %s, and %s stopped worker(s)", describe(deleted), workers)
    return {"executions": deleted, "workers": workers}


def describe(counts):
    """``counts`` by state, as "12 executions (SUCCEEDED: 10, FAILED: 2)"."""
    total = sum(counts.values())
    by_state = ", ".join(f"{state}: {count}" for state, count in sorted(counts.items()))
    return f"{total} execution(s)" + (f" ({by_state})" if by_state else "")


def register_if_configured():
    """Register the built-in retention task and its schedule when TOOSIMPLEQ_RETENTION asks for them."""
    if not conf.RETENTION:
        return
    retention_ages()  # a mistake is reported at start-up, not at the first run
    task = register(Task(apply_retention, name=TASK_NAME))
    register_schedule(Schedule(task, conf.RETENTION_CRON, name=TASK_NAME))
