"""The engine's SQL, behind named functions: storing calls, and (joined from worker/claiming.py) claiming them.

The statements of the hot path are written out once and sent through a
cursor of the driver itself: Django's per-field machinery and cursors suit
statements that change from call to call, these run for every task.
"""

import contextlib
import datetime
import functools
import json
import warnings
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, connections, transaction
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from . import serialization, signals, wakeup
from .models import TaskExec, dedup_key, queue_database

# Shared with the claim and finish until the two halves of this module are joined.
from .worker.claiming import _fetchall, _in_driver_style, _run

States = TaskExec.States


# ---------------------------------------------------------------------------
# Storing calls: queue() and queue_many(), and the next run of a call that is
# retried or was interrupted.


class WaitingRow(NamedTuple):
    """A call to store as a waiting row: the values of its columns, and its arguments as stored."""

    task_name: str
    args: list  # as given: the TaskExec returned holds them
    kwargs: dict
    queue: str
    priority: int
    state: str
    due: datetime.datetime
    created: datetime.datetime
    retries: int
    retry_delay: float
    attempt: int
    dedup_key: str | None
    backend: str
    run_after: datetime.datetime | None
    # args and kwargs as JSON text: encoded once, when the call is checked.
    args_json: str
    kwargs_json: str


# Enough rows in one INSERT to spread the cost of a round trip; few enough
# to keep its SQL under 4 kB, the longest statement psycopg keeps parsed.
ROWS_PER_INSERT = 40


def enqueue(task, calls, *, priority, queue, backend="", run_after=None):
    """Store ``calls`` (``registry.Call``s) of ``task``, all or none.

    Returns a list: for each call its TaskExec, or False when the task is
    unique and the same call is already waiting (or comes earlier in
    ``calls``). Nothing is stored when a call's arguments cannot be.
    ``backend`` and ``run_after``: a call queued through django.tasks.
    """
    now = timezone.now()
    name, retries, retry_delay = task.name, task.retries, float(task.retry_delay)
    rows = []
    for args, kwargs, due in calls:
        due = now if due is None else _checked_due(due)
        # What cannot be stored is refused here, before anything is, naming the argument.
        encoded_args, encoded_kwargs = serialization.encode_call(args, kwargs)
        rows.append(
            WaitingRow(
                name, list(args), dict(kwargs), queue, priority, States.QUEUED if due <= now else States.SLEEPING,
                due, now, retries, retry_delay, 1,
                dedup_key(name, encoded_args, encoded_kwargs) if task.unique else None,
                backend, run_after, _as_json(encoded_args), _as_json(encoded_kwargs),
            )  # fmt: skip
        )
    executions = _insert_waiting(rows)
    if signals.task_queued.receivers:
        _send_queued_on_commit([execution for execution in executions if execution])
    return executions


def requeue(execution, **changes):
    """Store another run of ``execution``'s call (a TaskExec or a claimed task): a retry, a replacement.

    ``changes``: the state, due, retries or retry_delay of the new run, when
    not those of a call queued now. None when its task is unique and the
    same call already waits: that one stands for this run.
    """
    from .registry import tasks_registry

    now = timezone.now()
    encoded_args, encoded_kwargs = serialization.encode_call(execution.args, execution.kwargs)
    task = tasks_registry.get(execution.task_name)
    row = WaitingRow(
        execution.task_name, execution.args, execution.kwargs, execution.queue, execution.priority, States.QUEUED,
        now, now, execution.retries, execution.retry_delay, execution.attempt + 1,
        # The new run waits like a queued call, so it is deduplicated like one.
        dedup_key(execution.task_name, encoded_args, encoded_kwargs) if task is not None and task.unique else None,
        execution.backend, None, _as_json(encoded_args), _as_json(encoded_kwargs),
    )._replace(**changes)  # fmt: skip
    [again] = _insert_waiting([row])
    return again or None


def _as_json(data):
    # Most calls have no keyword arguments, many no arguments at all.
    return json.dumps(data) if data else ("[]" if isinstance(data, list) else "{}")


def _checked_due(due):
    """``due`` as it is stored: a naive time, when USE_TZ is on, is read in TIME_ZONE, with a warning.

    That is what Django's DateTimeField does with one, and what upstream's
    queue() accepted.
    """
    if not isinstance(due, datetime.datetime):
        raise TypeError(f"due must be a datetime, not {type(due).__name__}")
    if settings.USE_TZ and timezone.is_naive(due):
        warnings.warn(
            f"due={due} is a naive datetime while time zone support is active: read in {settings.TIME_ZONE}",
            RuntimeWarning,
            stacklevel=6,  # the caller of queue(), through Task.enqueue() and enqueue_many()
        )
        return timezone.make_aware(due, timezone.get_default_timezone())
    if not settings.USE_TZ and timezone.is_aware(due):
        raise ValueError("due must be a naive datetime when USE_TZ is False")
    return due


def _send_queued_on_commit(executions):
    """task_queued for each of ``executions``, once they are committed (never, if rolled back)."""
    if not executions:
        return

    def send():
        for execution in executions:
            signals.send(signals.task_queued, TaskExec, execution=execution)

    transaction.on_commit(send, using=executions[0]._state.db)


def _insert_waiting(rows):
    """Insert ``rows`` (WaitingRows); for each, its TaskExec, or False when it was refused as a duplicate.

    The unique index on ``dedup_key`` refuses a call already waiting: it
    decides between concurrent callers too. A call that comes twice in
    ``rows`` is stored once.
    """
    if not rows:
        return []
    using = queue_database()
    database = connections[using]
    insert = _insert_returning if _can_insert_returning(database) else _insert_with_orm
    fresh = _first_of_each_call(rows)
    ids = [None] * len(rows)
    # One row is one statement, atomic by itself.
    with transaction.atomic(using=using) if len(fresh) > 1 else contextlib.nullcontext():
        for start in range(0, len(fresh), ROWS_PER_INSERT):
            batch = fresh[start : start + ROWS_PER_INSERT]
            for i, pk in zip(batch, insert([rows[i] for i in batch], database)):
                ids[i] = pk
    executions = _saved_executions(rows, ids, using)
    for queue in {row.queue for row, pk in zip(rows, ids) if pk is not None and row.state == States.QUEUED}:
        wakeup.task_queued(queue, using)
    refused = [row for row, pk in zip(rows, ids) if pk is None]
    if refused:
        _advance_sleeping_twins(refused, using)
    return executions


def _first_of_each_call(rows):
    """The positions in ``rows`` of those whose call does not come earlier (the same dedup_key)."""
    seen = set()
    first = []
    for i, row in enumerate(rows):
        if row.dedup_key is None or row.dedup_key not in seen:
            first.append(i)
        seen.add(row.dedup_key)
    return first


def _saved_executions(rows, ids, using):
    """For each of ``rows``, its TaskExec as stored with its id in ``ids``, or False when that is None."""
    # Model.__init__ would cost more than storing the row: each is made as
    # unpickling makes one, unless something listens for the
    # initialisation of models.
    new = _through_init if pre_init.has_listeners(TaskExec) or post_init.has_listeners(TaskExec) else _without_init
    executions = []
    for row, pk in zip(rows, ids):
        if pk is None:
            executions.append(False)
            continue
        execution = new(pk, row)
        execution._state.adding, execution._state.db = False, using  # as Model.from_db() leaves what it reads
        executions.append(execution)
    return executions


def _without_init(pk, row):
    execution = TaskExec.__new__(TaskExec)
    attributes = execution.__dict__
    attributes.update(_left_empty())
    attributes.update(zip(_COLUMNS, row))
    attributes["id"] = pk
    execution._state = ModelState()
    return execution


def _through_init(pk, row):
    return TaskExec(pk, **_values_by_name(row))


def _values_by_name(row):
    """The values of ``row``'s columns, by field name."""
    return dict(zip(_COLUMNS, row))


# The columns of a WaitingRow, in the order of its values.
_COLUMNS = WaitingRow._fields[: WaitingRow._fields.index("args_json")]


@functools.cache
def _left_empty():
    """The attributes of a TaskExec a waiting row leaves empty, and their values: None, or an outcome's empty text."""
    fields = TaskExec._meta.concrete_fields
    return {field.attname: field.get_default() for field in fields if field.name not in _COLUMNS and not field.primary_key}


def _advance_sleeping_twins(refused, using):
    """A unique call refused because its twin sleeps until later: the twin comes forward.

    As upstream did, queueing the same call again sooner moves the waiting
    one's due time earlier (or queues it now) rather than leaving it to its
    later time. One conditional UPDATE each: a twin claimed or moved
    meanwhile is left alone.
    """
    now = timezone.now()
    for row in refused:
        TaskExec.objects.using(using).filter(dedup_key=row.dedup_key, state=States.SLEEPING, due__gt=row.due).update(
            due=row.due, state=States.QUEUED if row.due <= now else States.SLEEPING
        )


def _can_insert_returning(database):
    """Whether the database takes ON CONFLICT DO NOTHING and RETURNING (PostgreSQL, SQLite >= 3.35)."""
    return database.vendor in ("postgresql", "sqlite") and database.features.can_return_columns_from_insert


def _insert_returning(rows, database):
    """INSERT ``rows`` in one statement; returns the id of each, None for those refused.

    A refused duplicate is no error (ON CONFLICT DO NOTHING: no savepoint
    needed), and on PostgreSQL the same statement sends the NOTIFY that
    wakes idle workers, delivered when it commits.
    """
    notify = database.vendor == "postgresql" and any(row.state == States.QUEUED for row in rows)
    deduplicated = any(row.dedup_key is not None for row in rows)
    sql = _insert_sql(database.alias, len(rows), notify, deduplicated)
    # Most rows of a call share their datetimes: each is adapted once.
    adapt = functools.cache(database.ops.adapt_datetimefield_value)
    params = []
    for row in rows:
        params += (
            row.task_name, row.args_json, row.kwargs_json, row.queue, row.priority, row.state,
            adapt(row.due), adapt(row.created), row.retries, row.retry_delay, row.attempt, row.dedup_key,
            row.backend, adapt(row.run_after),
        )  # fmt: skip
    returned = _execute(database, sql, params)
    if not deduplicated:
        return [pk for pk, *_ in returned]
    # Rows come back in the order of the VALUES, as Django's bulk_create
    # relies on, less those refused: only unique calls are refused, and
    # their dedup_key tells which they are.
    ids_by_key = {key: pk for pk, key, *_ in returned if key is not None}
    unkeyed_ids = iter([pk for pk, key, *_ in returned if key is None])
    return [next(unkeyed_ids) if row.dedup_key is None else ids_by_key.get(row.dedup_key) for row in rows]


@functools.lru_cache(maxsize=128)
def _insert_sql(alias, rows, notify, deduplicated):
    """The INSERT of ``rows`` waiting rows on database ``alias``; the values as ``_insert_returning`` lists them.

    ``notify``: with the NOTIFY of PostgreSQL. ``deduplicated``: some rows
    have a dedup_key, which a waiting row may already hold.
    """
    database = connections[alias]
    quote = database.ops.quote_name
    fields = [TaskExec._meta.get_field(name) for name in _COLUMNS]
    # The outcome's text columns are written empty; the columns left out are NULL.
    blank = [TaskExec._meta.get_field(attname) for attname, value in _left_empty().items() if value == ""]
    columns = ", ".join(quote(field.column) for field in fields + blank)
    placeholders = ["%s"] * len(fields) + ["''"] * len(blank)
    row = f"({', '.join(placeholders)})"
    column = {name: quote(TaskExec._meta.get_field(name).column) for name in ("id", "dedup_key", "queue")}
    insert = (
        f"INSERT INTO {quote(TaskExec._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)} "
        + (f"ON CONFLICT ({column['dedup_key']}) DO NOTHING " if deduplicated else "")
        + f"RETURNING {column['id']} AS id, {column['dedup_key']} AS dedup_key, {column['queue']} AS queue"
    )
    if notify:
        insert = f"WITH queued AS ({insert}) SELECT id, dedup_key, pg_notify('{wakeup.CHANNEL}', queue) FROM queued"
    return insert


def _execute(database, sql, params):
    """Run ``sql``, written with Django's placeholders; returns its rows."""
    if database.queries_logged:
        # DEBUG, or a test counting queries: a developer expects to see the
        # INSERT of a queue() among the request's queries.
        with database.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    return _run(database, _in_driver_style(database.vendor, sql), params, _fetchall)


def _insert_with_orm(rows, database):
    """What other databases (MySQL) do instead: one save() each; returns the id of each, None for those refused."""
    ids = []
    for row in rows:
        execution = TaskExec(**_values_by_name(row))
        try:
            # A savepoint, so that the caller's own transaction survives the refusal.
            with transaction.atomic(using=database.alias):
                execution.save(force_insert=True, using=database.alias)
        except IntegrityError:
            execution.pk = None  # the same call already waits
        ids.append(execution.pk)
    return ids
