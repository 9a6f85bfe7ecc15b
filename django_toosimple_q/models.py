"""What the database stores: task executions and workers."""

import collections
import datetime
import hashlib
import os
import socket

from django.db import connections, models, router, transaction
from django.utils import timezone

from . import conf, serialization
from .fields import TaggedJSONField


class TaskExecQuerySet(models.QuerySet):
    def cancel(self):
        """Cancel the rows of this queryset that still wait (QUEUED or SLEEPING); returns how many.

        One UPDATE: a row a worker claimed meanwhile is no longer waiting and
        keeps its state. A cancelled unique call no longer blocks the next one.
        """
        return self.filter(state__in=TaskExec.WAITING_STATES).update(
            state=TaskExec.States.CANCELLED, dedup_key=None, finished=timezone.now()
        )


def queue_database():
    """The alias of the database that holds the queue's tables, as Django's routers say.

    Statements through the ORM follow the routers by themselves; this is for
    what does not: transactions, raw SQL, the NOTIFY listener.
    """
    return router.db_for_write(TaskExec)


def distinct_values(field_name, *, using=None):
    """The distinct values of TaskExec's ``field_name``, sorted, without reading every row.

    A loose index scan: one index seek for each value, however many rows
    share it. The field must lead an index.
    """
    connection = connections[using or router.db_for_read(TaskExec)]
    quote = connection.ops.quote_name
    table, column = quote(TaskExec._meta.db_table), quote(TaskExec._meta.get_field(field_name).column)
    sql = (
        f"WITH RECURSIVE found(value) AS ("
        f"SELECT MIN({column}) FROM {table} "
        f"UNION ALL SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.value) "
        f"FROM found WHERE found.value IS NOT NULL"
        f") SELECT value FROM found WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return [value for (value,) in cursor.fetchall()]


def dedup_key(task_name, encoded_args, encoded_kwargs):
    """What identifies a call of a unique task while it waits."""
    call = serialization.canonical([task_name, encoded_args, encoded_kwargs])
    return hashlib.sha256(call.encode()).hexdigest()


class TaskExec(models.Model):
    """One execution of a task: queued, run by a worker, with its outcome."""

    class States(models.TextChoices):
        SLEEPING = "SLEEPING", "Sleeping"
        QUEUED = "QUEUED", "Queued"
        PROCESSING = "PROCESSING", "Processing"
        SUCCEEDED = "SUCCEEDED", "Succeeded"
        FAILED = "FAILED", "Failed"
        INTERRUPTED = "INTERRUPTED", "Interrupted"
        INVALID = "INVALID", "Invalid"
        CANCELLED = "CANCELLED", "Cancelled"

    WAITING_STATES = (States.SLEEPING, States.QUEUED)
    FINISHED_STATES = (States.SUCCEEDED, States.FAILED, States.INTERRUPTED, States.INVALID, States.CANCELLED)

    id = models.BigAutoField(primary_key=True)
    task_name = models.CharField(max_length=1024)
    args = TaggedJSONField(default=list)
    kwargs = TaggedJSONField(default=dict)
    queue = models.CharField(max_length=255, default="default")
    priority = models.IntegerField(default=0)
    state = models.CharField(max_length=32, choices=States.choices, default=States.QUEUED)
    due = models.DateTimeField(default=timezone.now)
    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    worker = models.ForeignKey(
        "WorkerStatus", null=True, blank=True, on_delete=models.SET_NULL, related_name="executions"
    )
    retries = models.IntegerField(default=0, help_text="retries left (-1: forever)")
    retry_delay = models.FloatField(default=0, help_text="seconds before the next retry")
    # Copied, plus one, to each replacement (a retry, a run after an
    # interruption): every run of one call counts.
    attempt = models.PositiveIntegerField(default=1, help_text="which run of its call this is (1: the first)")
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="replaces"
    )
    result = TaggedJSONField(null=True, blank=True)
    result_preview = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    stdout = models.TextField(blank=True, default="")
    stderr = models.TextField(blank=True, default="")
    # Set only while a unique task waits: the unique index is what refuses a
    # second identical call, even from concurrent processes.
    dedup_key = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    # Rows queued through Django's task framework (django.tasks): the TASKS
    # alias of the backend that queued them; empty for the native API.
    # Database defaults too, for rows written by SQL of one's own.
    backend = models.CharField(max_length=255, blank=True, default="", db_default="", editable=False)
    # The run_after the call was queued with: ``due`` alone cannot tell
    # "no run_after" from a run_after that was already past.
    run_after = models.DateTimeField(null=True, blank=True, editable=False)
    # django.tasks reports each failure by the class of its exception.
    error_class = models.CharField(
        max_length=1024, blank=True, default="", db_default="", help_text="path of the exception's class"
    )

    objects = TaskExecQuerySet.as_manager()

    class Meta:
        verbose_name = "task execution"
        # Upstream 1.x's codenames, kept for the groups that hold them.
        permissions = [
            ("requeue_taskexec", "Can requeue tasks"),
            ("cancel_taskexec", "Can cancel waiting tasks"),
        ]
        indexes = [
            # The claim: the next QUEUED rows in claim order.
            models.Index(
                fields=["-priority", "due", "id"],
                name="toosimpleq_claim_idx",
                condition=models.Q(state="QUEUED"),
            ),
            # The claim of a worker that serves some queues: the next QUEUED
            # rows of one queue, however many other queues hold.
            models.Index(
                fields=["queue", "-priority", "due", "id"],
                name="toosimpleq_queue_claim_idx",
                condition=models.Q(state="QUEUED"),
            ),
            # Waking sleeping rows whose time has come.
            models.Index(fields=["due"], name="toosimpleq_sleeping_idx", condition=models.Q(state="SLEEPING")),
            # The statistics: each queue's sleeping rows and the oldest of them
            # (its QUEUED ones: the queue's claim index), without the history.
            models.Index(
                fields=["queue", "created"],
                name="toosimpleq_sleeping_queue_idx",
                condition=models.Q(state="SLEEPING"),
            ),
            # Finding the running rows of a dead worker.
            models.Index(fields=["worker"], name="toosimpleq_processing_idx", condition=models.Q(state="PROCESSING")),
            models.Index(fields=["task_name", "created"], name="toosimpleq_task_idx"),
            # The admin and the statistics on big tables: the distinct queues
            # and the filters by queue and state, the newest rows of a state,
            # the date hierarchy, the recent outcomes.
            models.Index(fields=["queue", "state"], name="toosimpleq_queue_state_idx"),
            models.Index(fields=["state", "id"], name="toosimpleq_state_idx"),
            models.Index(fields=["created"], name="toosimpleq_created_idx"),
            models.Index(fields=["finished"], name="toosimpleq_finished_idx"),
        ]

    def __str__(self):
        return f"{self.task_name} #{self.pk} [{self.state}]"

    @property
    def task(self):
        """The Task of this row (registered, or a django.tasks one seen as ours), or None when it is not in the code."""
        from .registry import task_of_row

        return task_of_row(self.task_name, self.backend)

    def cancel(self):
        """Cancel this execution if it still waits; whether it did."""
        cancelled = TaskExec.objects.filter(pk=self.pk).cancel()
        self.refresh_from_db(fields=["state", "finished", "dedup_key"])
        return bool(cancelled)

    def queue_again(self):
        """Queue this execution's call as a new call: the task's current options, a fresh attempt budget.

        Returns the new TaskExec, or False when the task is unique and the
        same call already waits. LookupError when the task is no longer in
        the code.
        """
        task = self.task
        if task is None:
            raise LookupError(f"No task named {self.task_name!r} is registered")
        return task.enqueue(self.args, self.kwargs)


def default_label():
    return f"{socket.gethostname()}-{os.getpid()}"


def default_worker_timeout():
    return datetime.timedelta(seconds=conf.WORKER_TIMEOUT)


class WorkerStatus(models.Model):
    """One run of a worker: who it is, what it serves, and its heartbeat."""

    class States(models.TextChoices):
        ONLINE = "ONLINE", "Online"
        STOPPED = "STOPPED", "Stopped"
        CRASHED = "CRASHED", "Crashed"
        TIMEDOUT = "TIMEDOUT", "Timed out"

    class ExitCodes(models.IntegerChoices):
        # A graceful stop exits 0, or 77 when running tasks outlived the grace
        # period and were interrupted; an error in the worker's own loop exits 99.
        # It exits 78 when it abandoned more threads stuck past a task's timeout
        # than TOOSIMPLEQ_MAX_ABANDONED_THREADS: a fresh process gets them back.
        # Upstream 1.x's names, and its values, for the first three.
        STOPPED = 0, "Stopped"
        TERMINATED = 77, "Terminated"
        ABANDONED_THREADS = 78, "Abandoned threads"
        CRASHED = 99, "Crashed"

    id = models.BigAutoField(primary_key=True)
    label = models.CharField(max_length=1024)
    hostname = models.CharField(max_length=1024)
    pid = models.IntegerField()
    threads = models.PositiveIntegerField(default=1)
    queues = models.JSONField(default=list, blank=True, help_text="queues served (empty: all)")
    excluded_queues = models.JSONField(default=list, blank=True)
    started = models.DateTimeField(default=timezone.now)
    last_tick = models.DateTimeField(default=timezone.now)
    # Each worker's own (worker --timeout): whoever reaps it reads it here.
    timeout = models.DurationField(
        default=default_worker_timeout, help_text="without a heartbeat for this long, it is taken for dead"
    )
    abandoned_threads = models.PositiveIntegerField(
        default=0, help_text="threads left stuck in a task past its timeout"
    )
    # Written at each heartbeat: see worker/counters.py.
    counters = models.JSONField(
        default=dict, blank=True, help_text="the runs it ended, by queue and state, and their run times"
    )
    stopped = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(choices=ExitCodes.choices, null=True, blank=True)
    # None while it runs (or if it died without a word), "" after a clean stop,
    # the traceback after a crash: as upstream 1.x had it.
    exit_log = models.TextField(null=True, blank=True)

    class Meta:
        verbose_name = "worker status"
        verbose_name_plural = "worker statuses"
        # Stopped workers pile up (a row per process start, until pruned):
        # the admin's list and the workers online are read through these.
        indexes = [
            models.Index(fields=["started"], name="toosimpleq_worker_started_idx"),
            models.Index(fields=["last_tick"], name="toosimpleq_worker_running_idx", condition=models.Q(stopped=None)),
            # The workers stopped recently (the metrics), or long ago (pruning).
            models.Index(fields=["stopped"], name="toosimpleq_worker_stopped_idx"),
        ]

    def __str__(self):
        return f"{self.label} [{self.state}]"

    @property
    def state(self):
        if self.stopped is not None:
            return self.States.CRASHED if self.exit_code == self.ExitCodes.CRASHED else self.States.STOPPED
        if self.last_tick < timezone.now() - self.timeout:
            return self.States.TIMEDOUT
        return self.States.ONLINE


class ScheduleExec(models.Model):
    """Where a schedule stands: its last due time, claimed once across workers."""

    class States(models.TextChoices):
        ACTIVE = "ACTIVE", "Active"
        INVALID = "INVALID", "Invalid"

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(max_length=1024, unique=True)
    task_name = models.CharField(max_length=1024, blank=True, default="")
    cron = models.CharField(max_length=255, blank=True, default="")
    last_due = models.DateTimeField(null=True, blank=True)
    last_task = models.ForeignKey(TaskExec, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    state = models.CharField(max_length=32, choices=States.choices, default=States.ACTIVE)

    class Meta:
        verbose_name = "schedule"
        permissions = [("force_run_scheduleexec", "Can force execution of schedules")]

    def __str__(self):
        return f"{self.name} [{self.state}]"

    @property
    def upcomming_due(self):
        """The next occurrence of its cron from now; None when manual or gone from the code.

        Upstream 1.x's name, spelling included.
        """
        schedule = self.schedule
        return None if schedule is None else schedule.cron.next_due(timezone.now())

    @property
    def schedule(self):
        """The registered Schedule of this row, or None when it is not in the code."""
        from .registry import schedules_registry

        return schedules_registry.get(self.name)


class QueueOverview(TaskExec):
    """The admin's overview of the queues: an entry of the admin index, no table of its own."""

    class Meta:
        proxy = True
        verbose_name = verbose_name_plural = "queue overview"
        default_permissions = ()


# Rows deleted per transaction: short enough that workers and queue() are
# not kept waiting (SQLite has one writer), and few enough ids per statement
# for any database's limit on parameters.
PRUNE_BATCH = 500


def prune_executions(before, *, states=None, queues=None, dry_run=False, batch_size=PRUNE_BATCH):
    """Delete the calls that ended before ``before``, whole: each with all its runs.

    A call is the chain of its runs, linked by ``replaced_by`` (retries,
    interruptions); it goes when its last run is finished (in ``states``, if
    given: its outcome), in one of ``queues`` if given, and ended before
    ``before``. So no run is deleted while a later run of its call is kept,
    and nothing waiting or running is. A schedule's ``last_task`` among them
    is cleared. Batches of ``batch_size`` calls, each in its own short
    transaction. Returns how many rows were deleted (``dry_run``: would be),
    by state.
    """
    states = [state for state in (states or TaskExec.FINISHED_STATES) if state in TaskExec.FINISHED_STATES]
    last_runs = TaskExec.objects.filter(
        replaced_by__isnull=True,
        state__in=states,
    ).filter(
        # A row ended without a finished time (cancelled before upstream kept one) ended when created.
        models.Q(finished__lt=before) | models.Q(finished__isnull=True, created__lt=before)
    )
    if queues:
        last_runs = last_runs.filter(queue__in=queues)
    deleted = collections.Counter()
    after = 0
    while True:
        batch = list(last_runs.filter(id__gt=after).order_by("id").values_list("id", "state")[:batch_size])
        if not batch:
            return deleted
        after = batch[-1][0]
        chains = _with_earlier_runs(batch)
        deleted.update(state for _, state in chains)
        if not dry_run:
            _delete_executions([pk for pk, _ in chains])


def _with_earlier_runs(runs):
    """``runs`` ((id, state) pairs) and every earlier run of their calls: one query per step back."""
    chains = list(runs)
    latest = [pk for pk, _ in runs]
    while latest:
        earlier = list(TaskExec.objects.filter(replaced_by__in=latest).values_list("id", "state"))
        chains += earlier
        latest = [pk for pk, _ in earlier]
    return chains


def _delete_executions(ids):
    """Delete the rows ``ids``, latest runs first, clearing what refers to them with one UPDATE each."""
    for start in range(0, len(ids), PRUNE_BATCH):
        chunk = ids[start : start + PRUNE_BATCH]
        with transaction.atomic(using=queue_database()):
            ScheduleExec.objects.filter(last_task__in=chunk).update(last_task=None)
            # Runs of one call are deleted together: what still refers to a row is outside its chain.
            TaskExec.objects.filter(replaced_by__in=chunk).exclude(id__in=chunk).update(replaced_by=None)
            _delete_rows(TaskExec, chunk)


def prune_workers(before, *, dry_run=False):
    """Delete the WorkerStatus rows of workers gone before ``before``; returns how many.

    Stopped then, or silent since (killed without a word). Their executions
    keep their rows, without a worker.
    """
    gone = WorkerStatus.objects.filter(
        models.Q(stopped__lt=before) | models.Q(stopped__isnull=True, last_tick__lt=before)
    )
    ids = list(gone.values_list("id", flat=True))
    if dry_run:
        return len(ids)
    for start in range(0, len(ids), PRUNE_BATCH):
        chunk = ids[start : start + PRUNE_BATCH]
        with transaction.atomic(using=queue_database()):
            TaskExec.objects.filter(worker__in=chunk).update(worker=None)
            _delete_rows(WorkerStatus, chunk)
    return len(ids)


def _delete_rows(model, ids):
    """DELETE the rows ``ids`` of ``model``, whose references the caller cleared.

    Not QuerySet.delete(): it would load every row to apply SET_NULL itself.
    """
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    placeholders = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {quote(model._meta.db_table)} WHERE {quote('id')} IN ({placeholders})", ids)
