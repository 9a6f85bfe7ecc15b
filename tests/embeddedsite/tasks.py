"""The embedded test site's tasks; each run leaves an Execution row, so that
a second run of the same call shows."""

import time

from django_toosimple_q.decorators import register_task, schedule
from tests.testapp.models import Execution


@register_task("embedded.quick")
def quick(key):
    Execution.objects.create(key=key)
    return key


@register_task("embedded.slow")
def slow(key, seconds=2):
    # Claimed is not yet running: tests wait for this row, not for PROCESSING.
    Execution.objects.create(key=f"{key} started")
    time.sleep(seconds)
    Execution.objects.create(key=key)
    return key


@schedule(cron="* * * * * *", datetime_kwarg="when")
@register_task("embedded.every_second")
def every_second(when):
    Execution.objects.create(key=f"every_second {when.isoformat()}")
