"""The benchmark's tasks: they do (next to) nothing, so that only the queue is measured."""

import time

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

from bench import runs
from django_toosimple_q.decorators import register_task


@register_task()
def noop():
    pass


@register_task()
def stamp():
    """When the body started: pickup latency ends here."""
    return time.time()


@task
def framework_noop():
    """noop, written with Django's task framework."""


@register_task()
def counted(number):
    """noop that records its run (bench/runs.py): the scale scenario counts the tasks run twice."""
    runs.record(number)
