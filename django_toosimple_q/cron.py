"""Cron expressions evaluated in the project's time zone, right across DST.

Occurrences are computed on the wall clock of settings.TIME_ZONE (naive
local times, which is what a cron line means) and only then made aware. A
wall time repeated by a fall-back change runs once, at its first occurrence;
one skipped by a spring-forward change is read with the offset from before
the change, so it runs once, late by the change (02:30 runs at 03:30).
"""

import datetime
from collections import deque

from croniter import CroniterBadDateError, croniter
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

MANUAL = "manual"
ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


class Cron:
    """A cron expression: 5 fields, an optional 6th for seconds, an @alias, or "manual"."""

    def __init__(self, expression):
        self.expression = expression
        error = self.error(expression)
        if error:
            raise ImproperlyConfigured(error)

    @staticmethod
    def error(expression):
        """Why ``expression`` is not a valid cron, or None when it is."""
        if not isinstance(expression, str):
            return f"cron must be a string, not {type(expression).__name__}"
        if expression == MANUAL or expression in ALIASES:
            return None
        if len(expression.split()) not in (5, 6) or not croniter.is_valid(expression):
            return (
                f"invalid cron {expression!r}: expected 5 fields (minute hour day month weekday), "
                f"an optional 6th for seconds, one of {', '.join(ALIASES)}, or {MANUAL!r}"
            )
        # A valid syntax can name a day that never comes (February 30th):
        # croniter only says so when asked for an occurrence, in the worker.
        try:
            croniter(expression).get_next()
        except CroniterBadDateError:
            return f"invalid cron {expression!r}: it never occurs"
        return None

    @property
    def is_manual(self):
        return self.expression == MANUAL

    def due_times(self, after, until, limit):
        """The occurrences in ``(after, until]``, oldest first: the last ``limit`` of them.

        Returns ``(due_times, skipped)``, ``skipped`` counting the older ones
        left out.
        """
        if self.is_manual:
            return [], 0
        kept = deque(maxlen=limit)
        count = 0
        previous = after
        iterator = croniter(self.expression, _wall_clock(after))
        while True:
            due = _aware(iterator.get_next(datetime.datetime))
            if due <= previous:
                continue  # around a DST change two wall times can be one instant
            if due > until:
                return list(kept), count - len(kept)
            kept.append(due)
            count += 1
            previous = due

    def next_due(self, after):
        """The first occurrence after ``after``, or None for a manual cron."""
        if self.is_manual:
            return None
        iterator = croniter(self.expression, _wall_clock(after))
        while True:
            due = _aware(iterator.get_next(datetime.datetime))
            if due > after:  # around a DST change two wall times can be one instant
                return due

    def latest_due(self, after, until):
        """The most recent occurrence in ``(after, until]``, or None."""
        if self.is_manual:
            return None
        # croniter's get_prev excludes its start; a due time exactly at
        # ``until`` must count.
        start = _wall_clock(until) + datetime.timedelta(microseconds=1)
        due = _aware(croniter(self.expression, start).get_prev(datetime.datetime))
        if due > until:  # the wall time of a spring-forward gap, made aware past until
            return None
        return due if after is None or due > after else None


def _wall_clock(moment):
    """``moment`` as a naive time on the clock of the current time zone."""
    if timezone.is_aware(moment):
        return timezone.localtime(moment).replace(tzinfo=None)
    return moment


def _aware(wall_time):
    """A naive wall time in the current time zone as a datetime to store.

    The result is in UTC: Python compares two datetimes sharing a tzinfo on
    their wall clocks, ignoring their offsets, so that across a DST change
    two of them could be one instant and still not compare equal.
    With USE_TZ = False datetimes are stored naive, in local time.
    """
    if not settings.USE_TZ:
        return wall_time
    # fold=0: a repeated wall time is its first occurrence; a skipped one
    # lands after the gap.
    local = wall_time.replace(tzinfo=timezone.get_current_timezone(), fold=0)
    return local.astimezone(datetime.timezone.utc)
