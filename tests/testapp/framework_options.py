"""Tasks given our options through ``@task(...)``: Django 6.1 and the backport pass them to the backend.

Imported only there (Django 6.0's ``@task`` refuses them); see test_backend.
"""

try:
    from django.tasks import task
except ImportError:  # Django 5.2: the backport
    from django_tasks import task

from .framework_tasks import TaskFailure, sleep_in_steps
from .models import Execution


@task(retries=1)
def always_fails():
    raise TaskFailure("again")


@task(unique=True)
def unique_echo(value):
    return value


@task(unique=True, retries=1)
def unique_queued_again_then_fails(key):
    """Its first run queues its own call again, then fails: the retry finds that call waiting."""
    if not Execution.objects.filter(key=key).exists():
        Execution.objects.create(key=key)
        unique_queued_again_then_fails.enqueue(key)
        raise TaskFailure("first run fails")
    return "second call"


@task(timeout=0.3)
def naps(seconds):
    return sleep_in_steps(seconds)
