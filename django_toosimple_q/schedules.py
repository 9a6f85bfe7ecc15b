"""What can be done to a schedule from code (and from the admin)."""

from django.utils import timezone

from .models import ScheduleExec
from .registry import schedules_registry


def force_run(name):
    """Queue the task of schedule ``name`` now, leaving its cron times alone.

    Returns the TaskExec, or False when the task is unique and already
    waiting. A ``datetime_kwarg`` receives the time of this forced run.
    """
    try:
        schedule = schedules_registry[name]
    except KeyError:
        raise LookupError(f"No schedule named {name!r} is registered") from None
    execution = schedule.queue(timezone.now())
    if execution:
        ScheduleExec.objects.filter(name=name).update(last_task=execution)
    return execution
