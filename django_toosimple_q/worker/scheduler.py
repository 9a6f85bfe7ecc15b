"""Turning due schedule occurrences into queued tasks, once each.

Every worker runs this; a due time is claimed by a compare-and-set on
ScheduleExec.last_due in the transaction that queues its task, so however
many workers evaluate a schedule at the same moment, one of them queues it.
"""

import logging

from django.db import transaction
from django.utils import timezone

from .. import conf
from ..models import ScheduleExec, queue_database
from ..registry import NOW, schedules_registry

logger = logging.getLogger("django_toosimple_q")


class Scheduler:
    """The schedules whose queue a worker serves."""

    def __init__(self, queue_filter):
        self.schedules = {
            name: schedule for name, schedule in schedules_registry.items() if queue_filter.serves(schedule.queue_name)
        }

    def sync(self, now=None):
        """Create the rows of new schedules; mark those gone from the code INVALID."""
        now = now or timezone.now()
        for name, schedule in self.schedules.items():
            last_due = now if schedule.last_run is NOW else schedule.last_run
            _, created = ScheduleExec.objects.get_or_create(
                name=name,
                defaults={"last_due": last_due, "task_name": schedule.task.name, "cron": schedule.cron.expression},
            )
            if not created:
                ScheduleExec.objects.filter(name=name).exclude(
                    task_name=schedule.task.name, cron=schedule.cron.expression, state=ScheduleExec.States.ACTIVE
                ).update(task_name=schedule.task.name, cron=schedule.cron.expression, state=ScheduleExec.States.ACTIVE)
        ScheduleExec.objects.exclude(name__in=list(schedules_registry)).exclude(
            state=ScheduleExec.States.INVALID
        ).update(state=ScheduleExec.States.INVALID)

    def run_due(self, now=None):
        """Queue the occurrences that came due; returns the TaskExecs queued."""
        if not self.schedules:
            return []
        now = now or timezone.now()
        queued = []
        rows = ScheduleExec.objects.filter(name__in=list(self.schedules), state=ScheduleExec.States.ACTIVE)
        for name, last_due in rows.values_list("name", "last_due"):
            queued += self._run_schedule(self.schedules[name], last_due, now)
        return queued

    def _run_schedule(self, schedule, last_due, now):
        if last_due is None:
            # First seen with last_run=None: run at once, for the latest
            # occurrence (as upstream 1.x), so that datetime_kwarg is always
            # an occurrence of the cron; a manual cron has none: now.
            due_times = [schedule.cron.latest_due(None, now) or now]
        elif schedule.catch_up:
            due_times, skipped = schedule.cron.due_times(last_due, now, limit=conf.CATCH_UP_LIMIT)
            if skipped:
                logger.warning(
                    "schedule %s: %s missed occurrence(s) skipped, over TOOSIMPLEQ_CATCH_UP_LIMIT; "
                    "queueing the last %s from %s",
                    schedule.name,
                    skipped,
                    len(due_times),
                    due_times[0],
                )
        else:
            latest = schedule.cron.latest_due(last_due, now)
            due_times = [latest] if latest else []
        if not due_times:
            return []
        with transaction.atomic(using=queue_database()):
            # The compare-and-set: only the worker that still sees last_due as
            # we read it moves it on; the others find no row and queue nothing.
            claimed = ScheduleExec.objects.filter(name=schedule.name, last_due=last_due).update(last_due=due_times[-1])
            if not claimed:
                return []
            queued = [execution for execution in schedule.queue_all(due_times) if execution]
            if queued:
                ScheduleExec.objects.filter(name=schedule.name).update(last_task=queued[-1])
        logger.info("schedule %s: queued %s occurrence(s), the last due %s", schedule.name, len(due_times), due_times[-1])
        return queued
