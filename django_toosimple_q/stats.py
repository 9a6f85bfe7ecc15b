"""Where the queues stand, in figures: the one source of every overview.

``collect()`` answers with a fixed number of aggregate queries, however many
rows and queues there are: the admin's overview, and any command or metric
that describes the queues, read the same figures from it.
"""

import datetime
import math
from dataclasses import dataclass

from django.db.models import Count, DateTimeField, ExpressionWrapper, F, Min, Q
from django.utils import timezone

from .models import ScheduleExec, TaskExec, WorkerStatus
from .registry import schedules_registry

# The states of the rows not finished: few, each read through a partial index.
LIVE_STATES = (*TaskExec.WAITING_STATES, TaskExec.States.PROCESSING)

# The windows of the recent counts, in minutes.
RECENT_WINDOWS = (5, 60)

# The upper bounds, in seconds, of the run times counted: percentiles are
# read as the bound of the bucket they fall in, with a fixed cost however
# many rows there are (what Prometheus histograms do too).
RUN_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, math.inf)


@dataclass(frozen=True)
class QueueStats:
    """One queue.

    ``counts`` maps each of LIVE_STATES to its number of rows: exact, as
    they are few. The finished rows are counted over recent windows only,
    never over the whole history: ``ended_recently`` maps each window of
    RECENT_WINDOWS (minutes) to the rows that ended within it, by finished
    state (TaskExec.FINISHED_STATES). ``oldest_waiting`` is the ``created``
    time of the oldest QUEUED or SLEEPING row, None when nothing waits;
    ``oldest_waiting_age`` its age. ``workers_online`` counts the online
    workers that serve the queue. ``run_time_p50`` and ``run_time_p95`` are
    the median and 95th percentile run times (seconds) of the runs that
    ended in the longest window, as the upper bound of their bucket of
    RUN_TIME_BUCKETS (math.inf: longer than them all); None without runs.
    """

    name: str
    counts: dict
    oldest_waiting: datetime.datetime | None
    oldest_waiting_age: datetime.timedelta | None
    ended_recently: dict
    workers_online: int
    run_time_p50: float | None = None
    run_time_p95: float | None = None

    @property
    def waiting(self):
        return sum(self.counts[state] for state in TaskExec.WAITING_STATES)

    @property
    def finished_recently(self):
        """The rows that ended within each window, in any finished state."""
        return {window: sum(by_state.values()) for window, by_state in self.ended_recently.items()}

    @property
    def failed_recently(self):
        """The rows that ended FAILED within each window."""
        return {window: by_state[TaskExec.States.FAILED] for window, by_state in self.ended_recently.items()}


@dataclass(frozen=True)
class NextSchedule:
    """An active schedule and when it comes due next (overdue: no worker has queued it yet)."""

    name: str
    task_name: str
    cron: str
    last_due: datetime.datetime | None
    next_due: datetime.datetime
    overdue: bool


@dataclass(frozen=True)
class Stats:
    """The queues (by name) and the schedules due next (soonest first), as of ``taken_at``."""

    taken_at: datetime.datetime
    queues: tuple
    next_schedules: tuple
    workers_online: int

    def queues_named(self, names):
        """The queues called ``names`` (collected with ``queues=names``); all of them when ``names`` is empty."""
        return [queue for queue in self.queues if not names or queue.name in names]


def collect(now=None, *, schedule_limit=10, queues=(), recent=True):
    """Where the queues and schedules stand at ``now`` (default: now).

    Six queries, each reading an index of the rows it counts, however long
    the finished history is: the PROCESSING rows by queue, the QUEUED and
    the SLEEPING rows by queue (their number and oldest), the rows finished
    within the longest window, the online workers and the active schedules.
    The queues are those that have rows waiting, running or ended within
    the longest window, or that an online worker names, and ``queues``;
    ``schedule_limit`` bounds the schedules listed.

    Without ``recent`` (what a health probe or a metrics scrape needs, at
    every probe) the rows of the last hour and the schedules are not read:
    four queries, ``ended_recently`` all zeros, no run times, no schedules.
    """
    now = now or timezone.now()
    counts = {}
    # Not their oldest: SQLite would find it by walking an index of every row's queue.
    processing = TaskExec.objects.filter(state=TaskExec.States.PROCESSING).values_list("queue")
    for queue, count in processing.annotate(rows=Count("*")).order_by():
        counts.setdefault(queue, dict.fromkeys(LIVE_STATES, 0))[TaskExec.States.PROCESSING] = count
    oldest = {}
    for state in TaskExec.WAITING_STATES:
        # One state at a time, so that each query reads its partial index:
        # SQLite reads them together by walking every row of an index of queues.
        rows = TaskExec.objects.filter(state=state).values_list("queue")
        for queue, count, created in rows.annotate(rows=Count("*"), oldest=Min("created")).order_by():
            counts.setdefault(queue, dict.fromkeys(LIVE_STATES, 0))[state] = count
            oldest[queue] = min(created, oldest.get(queue, created))
    ended, run_times = _recent_by_queue(now) if recent else ({}, {})
    workers = list(
        WorkerStatus.objects.filter(stopped=None)
        .alias(deadline=ExpressionWrapper(F("last_tick") + F("timeout"), output_field=DateTimeField()))
        .filter(deadline__gte=now)
    )
    names = set(counts) | set(ended) | {queue for worker in workers for queue in worker.queues} | set(queues)
    queues = tuple(
        QueueStats(
            name=name,
            counts=counts.get(name, dict.fromkeys(LIVE_STATES, 0)),
            oldest_waiting=oldest.get(name),
            oldest_waiting_age=now - oldest[name] if name in oldest else None,
            ended_recently=ended.get(name) or _no_endings(),
            workers_online=sum(1 for worker in workers if _serves(worker, name)),
            run_time_p50=percentile(run_times.get(name), 0.5),
            run_time_p95=percentile(run_times.get(name), 0.95),
        )
        for name in sorted(names)
    )
    return Stats(
        taken_at=now,
        queues=queues,
        next_schedules=_next_schedules(now, schedule_limit) if recent else (),
        workers_online=len(workers),
    )


def _no_endings():
    return {window: dict.fromkeys(TaskExec.FINISHED_STATES, 0) for window in RECENT_WINDOWS}


def _recent_by_queue(now):
    """For each queue, the rows that ended in each window by state, and their runs by run time: two dicts by queue.

    The run times count, for each bound of RUN_TIME_BUCKETS, the runs of
    the longest window that took at most that long.
    """
    since = {window: now - datetime.timedelta(minutes=window) for window in RECENT_WINDOWS}
    aggregates = {f"ended_{window}": Count("id", filter=Q(finished__gte=start)) for window, start in since.items()}
    ran = Q(started__isnull=False)
    for position, bound in enumerate(RUN_TIME_BUCKETS):
        within = ran if math.isinf(bound) else ran & Q(finished__lte=F("started") + datetime.timedelta(seconds=bound))
        aggregates[f"run_time_{position}"] = Count("id", filter=within)
    rows = (
        # Bounded on both sides: SQLite's planner then reads the index on
        # finished rather than walking a queue index to skip a sort.
        TaskExec.objects.filter(finished__gte=min(since.values()), finished__lte=now)
        .filter(state__in=TaskExec.FINISHED_STATES)
        .values("queue", "state")
        .annotate(**aggregates)
        .order_by()
    )
    ended, run_times = {}, {}
    for row in rows:
        by_window = ended.setdefault(row["queue"], _no_endings())
        for window in RECENT_WINDOWS:
            by_window[window][row["state"]] = row[f"ended_{window}"]
        # One row per state: the queue's runs are their sum.
        total = run_times.setdefault(row["queue"], [0] * len(RUN_TIME_BUCKETS))
        for position in range(len(RUN_TIME_BUCKETS)):
            total[position] += row[f"run_time_{position}"]
    return ended, run_times


def percentile(cumulative, fraction):
    """The bound of RUN_TIME_BUCKETS under which ``fraction`` of the runs fall.

    ``cumulative``: for each bound, how many runs took at most that long (the
    last: them all). None when there is no run.
    """
    if not cumulative or not cumulative[-1]:
        return None
    wanted = fraction * cumulative[-1]
    return next(bound for bound, count in zip(RUN_TIME_BUCKETS, cumulative) if count >= wanted)


def _serves(worker, queue):
    return (not worker.queues or queue in worker.queues) and queue not in worker.excluded_queues


def _next_schedules(now, limit):
    """The active schedules in the code, soonest first; manual ones never come due."""
    upcoming = []
    for row in ScheduleExec.objects.filter(state=ScheduleExec.States.ACTIVE):
        schedule = schedules_registry.get(row.name)
        if schedule is None or schedule.cron.is_manual:
            continue
        # A schedule first seen with last_run=None runs at once.
        next_due = now if row.last_due is None else schedule.cron.next_due(row.last_due)
        upcoming.append(
            NextSchedule(
                name=row.name,
                task_name=row.task_name,
                cron=row.cron,
                last_due=row.last_due,
                next_due=next_due,
                overdue=next_due < now,
            )
        )
    upcoming.sort(key=lambda schedule: (schedule.next_due, schedule.name))
    return tuple(upcoming[:limit])
