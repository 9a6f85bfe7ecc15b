"""The engine's SQL, behind named functions: what the hot path writes and reads.

Two sections: storing calls (``queue()``, ``queue_many()``, the next run of
a call), and claiming and finishing them. Their statements run for every
task, so each is written out as SQL once and sent through a cursor of the
driver itself (see ``_run``): Django's per-field machinery and cursors suit
statements that change from call to call.

Claiming on PostgreSQL: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
SKIP LOCKED) RETURNING`` statement, so concurrent workers skip each other's
rows instead of waiting on them. SQLite has no row locks: the same UPDATE
runs in a write transaction taken up front (BEGIN IMMEDIATE), which
serialises claimers. Other databases (MySQL) use the ORM:
``select_for_update(skip_locked=True)`` then an UPDATE, in one transaction.
"""

import contextlib
import datetime
import functools
import json
import logging
import sys
import threading
import time
import warnings
from typing import NamedTuple

from django.conf import settings
from django.db import IntegrityError, OperationalError, connections, models, transaction
from django.db.models import Exists, OuterRef
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils import timezone

from . import conf, serialization, signals, wakeup
from .models import TaskExec, dedup_key, distinct_values, queue_database
from .worker.backoff import Backoff

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States


# ---------------------------------------------------------------------------
# Storing calls: queue() and queue_many(), and the next run of a call that is
# retried or was interrupted.


class SharedColumns(NamedTuple):
    """The columns that the waiting rows stored together share: those of their task and of the moment."""

    task_name: str
    queue: str
    priority: int
    created: datetime.datetime
    retries: int
    retry_delay: float
    attempt: int
    backend: str
    run_after: datetime.datetime | None


class WaitingCall(NamedTuple):
    """A call to store as a waiting row: the columns of its own, and its arguments as stored."""

    args: list  # as given: the TaskExec returned holds them
    kwargs: dict
    state: str
    due: datetime.datetime
    dedup_key: str | None
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
    retry_delay = float(task.retry_delay)
    shared = SharedColumns(task.name, queue, priority, now, task.retries, retry_delay, 1, backend, run_after)
    waiting = []
    for args, kwargs, due in calls:
        due = now if due is None else _checked_due(due)
        # What cannot be stored is refused here, before anything is, naming the argument.
        encoded_args, encoded_kwargs = serialization.encode_call(args, kwargs)
        waiting.append(
            WaitingCall(
                list(args), dict(kwargs), States.QUEUED if due <= now else States.SLEEPING, due,
                dedup_key(task.name, encoded_args, encoded_kwargs) if task.unique else None,
                _as_json(encoded_args), _as_json(encoded_kwargs),
            )  # fmt: skip
        )
    executions = _insert_waiting(shared, waiting)
    if signals.task_queued.receivers:
        _send_queued_on_commit([execution for execution in executions if execution])
    return executions


def requeue(execution, *, state=States.QUEUED, due=None, retries=None, retry_delay=None):
    """Store another run of ``execution``'s call (a TaskExec or a claimed task): a retry, a replacement.

    ``state``, ``due`` (None: now), ``retries`` and ``retry_delay`` (None:
    the execution's) are the new run's. None when its task is unique and the
    same call already waits: that one stands for this run.
    """
    from .registry import task_of_row

    now = timezone.now()
    args, kwargs = _call_as_stored(execution)
    encoded_args, encoded_kwargs = serialization.encode_call(args, kwargs)
    task = task_of_row(execution.task_name, execution.backend)
    shared = SharedColumns(
        execution.task_name, execution.queue, execution.priority, now,
        execution.retries if retries is None else retries,
        execution.retry_delay if retry_delay is None else retry_delay,
        execution.attempt + 1, execution.backend, None,
    )  # fmt: skip
    call = WaitingCall(
        args, kwargs, state, now if due is None else due,
        # The new run waits like a queued call, so it is deduplicated like one.
        dedup_key(execution.task_name, encoded_args, encoded_kwargs) if task is not None and task.unique else None,
        _as_json(encoded_args), _as_json(encoded_kwargs),
    )  # fmt: skip
    [again] = _insert_waiting(shared, [call])
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


def _insert_waiting(shared, calls):
    """Insert a waiting row for each of ``calls`` (WaitingCalls), with the columns ``shared``.

    Returns for each call its TaskExec, or False when it was refused as a
    duplicate. The unique index on ``dedup_key`` refuses a call already
    waiting: it decides between concurrent callers too. A call that comes
    twice in ``calls`` is stored once.
    """
    if not calls:
        return []
    database = _queue_database()
    using = database.alias
    insert = _insert_returning if _can_insert_returning(database) else _insert_with_orm
    fresh = _first_of_each_call(calls)
    ids = [None] * len(calls)
    # One row is one statement, atomic by itself.
    with transaction.atomic(using=using) if len(fresh) > 1 else contextlib.nullcontext():
        for start in range(0, len(fresh), ROWS_PER_INSERT):
            batch = fresh[start : start + ROWS_PER_INSERT]
            for i, pk in zip(batch, insert(shared, [calls[i] for i in batch], database)):
                ids[i] = pk
    executions = _saved_executions(shared, calls, ids, using)
    if any(pk is not None and call.state == States.QUEUED for call, pk in zip(calls, ids)):
        wakeup.task_queued(shared.queue, using)
    refused = [call for call, pk in zip(calls, ids) if pk is None]
    if refused:
        _advance_sleeping_twins(refused, using)
    return executions


def _first_of_each_call(calls):
    """The positions in ``calls`` of those whose call does not come earlier (the same dedup_key)."""
    seen = set()
    first = []
    for i, call in enumerate(calls):
        if call.dedup_key is None or call.dedup_key not in seen:
            first.append(i)
        seen.add(call.dedup_key)
    return first


def _saved_executions(shared, calls, ids, using):
    """For each of ``calls``, its TaskExec as stored with its id in ``ids``, or False when that is None."""
    # Model.__init__ would cost more than storing the row: each is made as
    # unpickling makes one, unless something listens for the
    # initialisation of models.
    if pre_init.has_listeners(TaskExec) or post_init.has_listeners(TaskExec):
        new = functools.partial(_through_init, shared)
    else:
        new = functools.partial(_without_init, {**_left_empty(), **shared._asdict()})
    executions = []
    for call, pk in zip(calls, ids):
        if pk is None:
            executions.append(False)
            continue
        execution = new(pk, call)
        execution._state.adding, execution._state.db = False, using  # as Model.from_db() leaves what it reads
        executions.append(execution)
    return executions


def _without_init(shared_values, pk, call):
    """``shared_values``: the attributes that the executions stored together share."""
    execution = TaskExec.__new__(TaskExec)
    # Spelled out: merging a zip() of the call's columns costs more.
    execution.__dict__ = {
        **shared_values, "args": call.args, "kwargs": call.kwargs, "state": call.state, "due": call.due,
        "dedup_key": call.dedup_key, "id": pk, "_state": ModelState(),
    }  # fmt: skip
    return execution


def _through_init(shared, pk, call):
    return TaskExec(pk, **_values_by_name(shared, call))


def _values_by_name(shared, call):
    """The values of the columns of ``call``'s row, by field name."""
    return {**shared._asdict(), **dict(zip(_CALL_COLUMNS, call))}


# The columns of a WaitingCall, in the order of its values; then all those of a waiting row.
_CALL_COLUMNS = WaitingCall._fields[: WaitingCall._fields.index("args_json")]
_COLUMNS = (*_CALL_COLUMNS, *SharedColumns._fields)


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
    for call in refused:
        TaskExec.objects.using(using).filter(dedup_key=call.dedup_key, state=States.SLEEPING, due__gt=call.due).update(
            due=call.due, state=States.QUEUED if call.due <= now else States.SLEEPING
        )


def _can_insert_returning(database):
    """Whether the database takes ON CONFLICT DO NOTHING and RETURNING (PostgreSQL, SQLite >= 3.35)."""
    return database.vendor in ("postgresql", "sqlite") and database.features.can_return_columns_from_insert


def _insert_returning(shared, calls, database):
    """INSERT the rows of ``calls`` in one statement; returns the id of each, None for those refused.

    A refused duplicate is no error (ON CONFLICT DO NOTHING: no savepoint
    needed), and on PostgreSQL the same statement sends the NOTIFY that
    wakes idle workers, delivered when it commits.
    """
    notify = database.vendor == "postgresql" and any(call.state == States.QUEUED for call in calls)
    deduplicated = any(call.dedup_key is not None for call in calls)
    sql = _insert_sql(database.alias, len(calls), notify, deduplicated)
    # Most rows of a call share their datetimes: each is adapted once. In a
    # dict: making a functools.cache would cost a queue() more than it saves.
    adapted = {}

    def adapt(value):
        if value not in adapted:
            adapted[value] = database.ops.adapt_datetimefield_value(value)
        return adapted[value]

    shared = shared._replace(created=adapt(shared.created), run_after=adapt(shared.run_after))
    params = []
    for call in calls:
        params += (call.args_json, call.kwargs_json, call.state, adapt(call.due), call.dedup_key)
        params += shared
    returned = _execute(database, sql, params)
    if not deduplicated:
        return [row[0] for row in returned]
    # Rows come back in the order of the VALUES, as Django's bulk_create
    # relies on, less those refused: only unique calls are refused, and
    # their dedup_key tells which they are.
    ids_by_key = {key: pk for pk, key, *_ in returned if key is not None}
    unkeyed_ids = iter([pk for pk, key, *_ in returned if key is None])
    return [next(unkeyed_ids) if call.dedup_key is None else ids_by_key.get(call.dedup_key) for call in calls]


@functools.lru_cache(maxsize=128)
def _insert_sql(alias, rows, notify, deduplicated):
    """The INSERT of ``rows`` waiting rows on database ``alias``; the values as ``_insert_returning`` lists them.

    ``notify``: with the NOTIFY of PostgreSQL. ``deduplicated``: some rows
    have a dedup_key, which a waiting row may already hold. Each row
    returned holds its id, then its dedup_key when ``deduplicated``.
    """
    database = connections[alias]
    quote = database.ops.quote_name
    fields = [TaskExec._meta.get_field(name) for name in _COLUMNS]
    # The outcome's text columns are written empty; the columns left out are NULL.
    blank = [TaskExec._meta.get_field(attname) for attname, value in _left_empty().items() if value == ""]
    columns = ", ".join(quote(field.column) for field in fields + blank)
    placeholders = ["%s"] * len(fields) + ["''"] * len(blank)
    row = f"({', '.join(placeholders)})"
    # What is not read costs SQLite a copy of each row, and the driver a value.
    returned = ["id", *(["dedup_key"] if deduplicated else [])]
    returning = [f"{quote(TaskExec._meta.get_field(name).column)} AS {name}" for name in returned]
    if notify:
        returning.append(f"{quote(TaskExec._meta.get_field('queue').column)} AS queue")
    insert = (
        f"INSERT INTO {quote(TaskExec._meta.db_table)} ({columns}) VALUES {', '.join([row] * rows)} "
        + (f"ON CONFLICT ({quote(TaskExec._meta.get_field('dedup_key').column)}) DO NOTHING " if deduplicated else "")
        + f"RETURNING {', '.join(returning)}"
    )
    if notify:
        notified = f"pg_notify('{wakeup.CHANNEL}', queue)"
        insert = f"WITH queued AS ({insert}) SELECT {', '.join(returned)}, {notified} FROM queued"
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


def _insert_with_orm(shared, calls, database):
    """What other databases (MySQL) do instead: one save() each; returns the id of each, None for those refused."""
    ids = []
    for call in calls:
        execution = TaskExec(**_values_by_name(shared, call))
        try:
            # A savepoint, so that the caller's own transaction survives the refusal.
            with transaction.atomic(using=database.alias):
                execution.save(force_insert=True, using=database.alias)
        except IntegrityError:
            execution.pk = None  # the same call already waits
        ids.append(execution.pk)
    return ids


# ---------------------------------------------------------------------------
# Claiming and finishing.

# Claimed rows carry what running them needs, and nothing more.
CLAIMED_COLUMNS = (
    "id", "task_name", "args", "kwargs", "queue", "priority", "retries", "retry_delay", "attempt",
    "backend", "created", "started", "run_after",  # what a django.tasks row's result shows
)


class ClaimedTask(NamedTuple):
    """A claimed execution: made for every task, so a tuple rather than a frozen dataclass."""

    id: int
    task_name: str
    args: list
    kwargs: dict
    queue: str
    priority: int
    retries: int
    retry_delay: float
    attempt: int
    backend: str  # the django.tasks backend that queued it, or ""
    # What a django.tasks result shows, as the driver returns them (SQLite's
    # naive): made aware only where they are needed (worker/framework.py).
    created: object
    started: object
    run_after: object
    # Whether it replaces a run that was interrupted: it may be what killed
    # its worker, and then runs alone (see Worker._isolating).
    interrupted_before: bool
    # The arguments as stored (JSON text or data): what a retry is queued
    # with, whatever the task did to the ones it was given (see requeue).
    stored_call: tuple = None


def one_writer():
    """Whether the queue's database writes one transaction at a time (SQLite): a worker then stores its
    outcomes in the transactions of its claims, rather than in transactions of their own beside them."""
    return _queue_database().vendor == "sqlite"


def claim(worker_id, limit, queue_filter):
    """Flip up to ``limit`` QUEUED tasks to PROCESSING for this worker, and return them."""
    return finish_and_claim([], worker_id, limit, queue_filter)[1]


def finish_and_claim(endings, worker_id, limit, queue_filter):
    """Store the outcomes ``endings`` (as ``finish_many``) and claim (as ``claim``), all in one transaction.

    A worker's loop writes the outcomes its threads handed over with its next
    claim: one commit, and on SQLite one turn of its one writer, for both.
    Returns the ids of the outcomes stored and the tasks claimed.
    """
    if limit <= 0:
        return (finish_many(endings) if endings else set()), []
    database = _queue_database()
    groups = _grouped(endings)

    def finish_then_claim():
        return _finish_groups(database, groups), _claim_in_transaction(database, worker_id, limit, queue_filter)

    if database.vendor == "sqlite" and not database.in_atomic_block:
        return _retry_while_locked(lambda: _sqlite_write_transaction(database, finish_then_claim))
    if not groups and database.vendor == "postgresql":
        return set(), _claim_in_transaction(database, worker_id, limit, queue_filter)  # one statement
    with transaction.atomic(using=database.alias):
        return finish_then_claim()


def _claim_in_transaction(database, worker_id, limit, queue_filter):
    if database.vendor == "postgresql":
        return _claim_returning(database, worker_id, limit, queue_filter, lock_clause=" FOR UPDATE SKIP LOCKED")
    if database.vendor == "sqlite":
        # In a write transaction: a caller's (a TestCase), or one taken up front.
        return _claim_returning(database, worker_id, limit, queue_filter)
    return _claim_with_orm(worker_id, limit, queue_filter)


def _queue_database():
    """This thread's connection to the queue's database."""
    return connections[queue_database()]


def _queues_to_probe(database, queue_filter):
    """The queues to claim from one by one, or None for one read of every queue.

    A worker that excludes queues probes all the others, found by a loose
    index scan: one seek per queue, however many rows it holds. A queue
    with nothing QUEUED costs its probe one seek.
    """
    if queue_filter.queues:
        return queue_filter.queues
    if queue_filter.excluded:
        return tuple(queue for queue in distinct_values("queue", using=database.alias) if queue not in queue_filter.excluded)
    return None


ORDER = "ORDER BY priority DESC, due, id"

# The partial indexes of QUEUED rows in ORDER, of all queues and queue by queue (see TaskExec.Meta).
CLAIM_INDEX, QUEUE_CLAIM_INDEX = "toosimpleq_claim_idx", "toosimpleq_queue_claim_idx"


@functools.lru_cache
def _selection_sql(alias, probes, lock_clause=""):
    """The SELECT of the ids of the next QUEUED rows on database ``alias``, in claim order, with Django's placeholders.

    ``probes``: the number of queues read one by one, or None for one read
    of every queue; its parameters come from ``_selection_params``.
    """
    database = connections[alias]
    table = database.ops.quote_name(TaskExec._meta.db_table)

    def waiting(index):
        # The states are written in the SQL, not passed as parameters: a plan
        # made once for a prepared statement can then use the partial indexes.
        # SQLite is told the index: without the statistics of an ANALYZE (which
        # Django never runs) it would read every QUEUED row through the state
        # index and sort them, at each claim.
        indexed_by = f" INDEXED BY {index}" if database.vendor == "sqlite" else ""
        return f"SELECT id, priority, due FROM {table}{indexed_by} WHERE state = '{States.QUEUED}'"

    if probes is None:
        return f"SELECT id FROM ({waiting(CLAIM_INDEX)} {ORDER} LIMIT %s{lock_clause}) AS waiting"
    # One ordered read of each queue's own index, merged in claim order:
    # the other queues' rows are never read.
    probe = f"SELECT * FROM ({waiting(QUEUE_CLAIM_INDEX)} AND queue = %s {ORDER} LIMIT %s{lock_clause}) AS probe"
    return f"SELECT id FROM ({' UNION ALL '.join([probe] * probes)}) AS waiting {ORDER} LIMIT %s"


def _selection_params(queues, limit):
    """The parameters of ``_selection_sql`` for ``limit`` rows from ``queues`` (None: all)."""
    if queues is None:
        return [limit]
    return [*(value for queue in queues for value in (queue, limit)), limit]


def _probes(queues):
    return None if queues is None else len(queues)


@functools.lru_cache
def _claim_sql(alias, probes, lock_clause):
    """The claim statement on database ``alias``; its parameters are (started, worker_id, *selection parameters)."""
    database = connections[alias]
    vendor = database.vendor
    table = database.ops.quote_name(TaskExec._meta.db_table)
    select = _selection_sql(alias, probes, lock_clause)
    # PostgreSQL may run an IN (subquery) again for each row it updates, each
    # run locking other rows, and so claim far more than the limit; the
    # subquery of ARRAY() runs once.
    among = f"= ANY(ARRAY({select}))" if vendor == "postgresql" else f"IN ({select})"
    # Only a later run (attempt > 1) can replace an interrupted one: the
    # first runs look for none. A scalar subquery, not EXISTS: PostgreSQL
    # may plan an EXISTS as one hashed read of the whole table.
    replaced_by = database.ops.quote_name(TaskExec._meta.get_field("replaced_by").column)
    interrupted_before = (
        f"CASE WHEN attempt > 1 THEN (SELECT 1 FROM {table} AS earlier WHERE earlier.{replaced_by} = {table}.id "
        f"AND earlier.state = '{States.INTERRUPTED}' LIMIT 1) IS NOT NULL ELSE FALSE END"
    )
    sql = (
        f"UPDATE {table} SET state = '{States.PROCESSING}', started = %s, worker_id = %s, dedup_key = NULL "
        f"WHERE state = '{States.QUEUED}' AND id {among} RETURNING {', '.join(CLAIMED_COLUMNS)}, {interrupted_before}"
    )
    return _in_driver_style(vendor, sql)


def _claim_returning(database, worker_id, limit, queue_filter, lock_clause=""):
    queues = _queues_to_probe(database, queue_filter)
    if queues == ():
        return []
    sql = _claim_sql(database.alias, _probes(queues), lock_clause)
    started = database.ops.adapt_datetimefield_value(timezone.now())
    rows = _run(database, sql, [started, worker_id, *_selection_params(queues, limit)], _fetchall)
    return [_claimed_task(row) for row in rows]


def _sqlite_write_transaction(database, work):
    """``work()`` in a write transaction of SQLite, taken at once, on this process's turn to write."""
    with _SQLITE_WRITER:
        # Django's atomic() would BEGIN DEFERRED unless the user set
        # transaction_mode; the write lock must be taken before reading.
        _run(database, "BEGIN IMMEDIATE", (), _nothing)
        try:
            result = work()
            _run(database, "COMMIT", (), _nothing)
        except BaseException:
            # A COMMIT refused (a deferred foreign key) leaves the transaction open.
            if database.connection.in_transaction:
                _run(database, "ROLLBACK", (), _nothing)
            raise
    return result


# SQLite has one writer at a time. The threads of a process take turns at
# claiming and finishing on this lock, which lets the next one in as soon as
# it is free: SQLite's busy handler would sleep between its tries (a
# millisecond, then longer), and the loop's claim and the outcomes' writer
# meet at every task.
_SQLITE_WRITER = threading.Lock()


def _turn_to_write(database):
    """Wait for this thread's turn to write on ``database`` (SQLite, outside a caller's transaction)."""
    if database.vendor == "sqlite" and not database.in_atomic_block:
        return _SQLITE_WRITER
    return contextlib.nullcontext()


def _run(database, sql, params, read):
    """Run ``sql`` on ``database`` with a cursor of the driver itself; returns ``read(cursor)``.

    Django's cursors suit SQL that changes from call to call; these few
    statements never change and run once per task. With psycopg, Django's
    cursors bind parameters on the client, so PostgreSQL would parse and
    plan each run anew: here they are prepared, and planned once per
    connection (see ``_prepares``). On SQLite it spares rewriting every
    statement. Errors are still Django's.
    ``database`` is this thread's DatabaseWrapper, looked up once by the
    caller: the ``connection`` proxy looks it up at every attribute.
    """
    with database.wrap_database_errors:
        if database.connection is None:
            database.ensure_connection()
        raw = database.connection
        psycopg = database.Database.__name__ == "psycopg"
        cursor = database.Database.Cursor(raw) if psycopg else raw.cursor()
        try:
            if psycopg:
                cursor.execute(sql, params, prepare=_prepares(database, raw))
            else:
                cursor.execute(sql, params)
            return read(cursor)
        finally:
            cursor.close()


def _fetchall(cursor):
    return cursor.fetchall()


def _nothing(cursor):
    return None


# psycopg prepares a statement by itself once it has run this many times:
# never, for the connection's other statements, when Django turned that off.
ONLY_WHEN_ASKED = sys.maxsize


def _prepares(database, raw):
    """Whether psycopg is to prepare these statements on ``raw``, a psycopg connection.

    Django turns psycopg's prepared statements off unless OPTIONS asks for
    them, because a connection pooler in transaction mode (PgBouncer before
    1.21) may send the next transaction to a server connection that never
    saw the statement. TOOSIMPLEQ_PREPARED_STATEMENTS decides for these
    statements; left to None, they are prepared unless the database has
    DISABLE_SERVER_SIDE_CURSORS, which Django asks for behind such a pooler.
    The decision is taken once per connection, and kept in it. A connection
    whose OPTIONS set prepare_threshold prepares them as it prepares the rest.
    """
    if raw.prepare_threshold is None:  # as Django leaves it: psycopg prepares nothing
        prepare = conf.PREPARED_STATEMENTS
        if prepare is None:
            prepare = not database.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
        if not prepare:
            return False
        raw.prepare_threshold = ONLY_WHEN_ASKED
    return True


@functools.lru_cache(maxsize=128)  # queue_many() sends the same INSERT statement after statement
def _in_driver_style(vendor, sql):
    """``sql`` with the driver's placeholders: sqlite3 takes ? where Django writes %s."""
    return sql.replace("%s", "?") if vendor == "sqlite" else sql


def _claim_with_orm(worker_id, limit, queue_filter):
    with transaction.atomic(using=queue_database()):
        waiting = queue_filter.apply(TaskExec.objects.filter(state=States.QUEUED))
        ids = list(
            waiting.select_for_update(skip_locked=True)
            .order_by("-priority", "due", "id")
            .values_list("id", flat=True)[:limit]
        )
        return _take(ids, worker_id)


def claim_these(ids, worker_id):
    """Flip those of the executions ``ids`` still QUEUED to PROCESSING for this worker, and return them in claim order."""
    with transaction.atomic(using=queue_database()):
        return _take(ids, worker_id)


def _take(ids, worker_id):
    TaskExec.objects.filter(id__in=ids, state=States.QUEUED).update(
        state=States.PROCESSING, started=timezone.now(), worker_id=worker_id, dedup_key=None
    )
    taken = TaskExec.objects.filter(id__in=ids, state=States.PROCESSING, worker_id=worker_id).annotate(
        interrupted_before=Exists(TaskExec.objects.filter(replaced_by=OuterRef("pk"), state=States.INTERRUPTED))
    )
    rows = taken.order_by("-priority", "due", "id").values_list(*CLAIMED_COLUMNS, "interrupted_before")
    claimed = []
    for row in rows:
        args, kwargs = (row[position] for position in JSON_COLUMNS)
        claimed.append(ClaimedTask(*row, stored_call=serialization.encode_call(args, kwargs)))
    return claimed


# The columns that hold JSON: Django has the drivers return it as text, for
# JSONField to decode.
JSON_COLUMNS = [CLAIMED_COLUMNS.index("args"), CLAIMED_COLUMNS.index("kwargs")]


def _claimed_task(row):
    values = list(row)
    stored = tuple(values[position] for position in JSON_COLUMNS)
    for position in JSON_COLUMNS:
        values[position] = _decoded(values[position])
    return ClaimedTask(*values, stored_call=stored)


def _decoded(stored):
    """The value of an args or kwargs column as the driver returned it (JSON text, or its data)."""
    return serialization.decode(json.loads(stored) if isinstance(stored, str) else stored)


def _call_as_stored(execution):
    """The arguments of ``execution`` (a TaskExec or a claimed task) as stored, not as its task may have left them."""
    stored = getattr(execution, "stored_call", None)
    if stored is None:
        return execution.args, execution.kwargs
    return tuple(_decoded(value) for value in stored)


def finish(execution_id, worker_id, outcome):
    """Store how an execution ended: ``outcome`` maps TaskExec fields to values.

    Fenced on (PROCESSING, this worker): returns 0 when the row was taken
    from this worker (taken for dead, its task queued again) meanwhile.
    """
    return len(finish_many([(execution_id, worker_id, outcome)]))


def finish_many(endings):
    """Store how executions ended, all or none: ``endings`` are (execution_id, worker_id, outcome) triples.

    One statement for the outcomes that set the same fields (most often,
    all of them). Each row is fenced as in ``finish``: returns the ids of
    those stored, less the rows taken from their worker meanwhile.
    """
    database = _queue_database()
    groups = _grouped(endings)
    # A single statement is atomic by itself.
    atomic = transaction.atomic(using=database.alias) if len(groups) > 1 else contextlib.nullcontext()
    with _turn_to_write(database), atomic:
        return _finish_groups(database, groups)


def _grouped(endings):
    """``endings`` by the fields their outcomes set: each group is stored by one statement."""
    groups = {}
    for ending in endings:
        groups.setdefault(tuple(ending[2]), []).append(ending)
    return groups


def _finish_groups(database, groups):
    """Run the finishing UPDATE of each group of ``_grouped``; returns the ids of the rows stored."""
    return {execution_id for names, alike in groups.items() for (execution_id,) in _finish_alike(database, names, alike)}


def _finish_alike(database, names, endings):
    """Run the finishing UPDATE of ``endings``, whose outcomes set the fields ``names``; returns the rows stored."""
    sql, adapters = _finish_sql(database.alias, names, len(endings))
    return _run(database, sql, _finish_params(database, endings, adapters), _fetchall)


def _finish_params(database, endings, adapters):
    """The parameters of the finishing UPDATE of ``endings``: each one's id, worker's id, then its outcome's values."""
    params = []
    for execution_id, worker_id, outcome in endings:
        params += (execution_id, worker_id)
        values = zip(outcome.values(), adapters)
        params += (value if adapt is None else adapt(value, database) for value, adapt in values)
    return params


def column_adapter(field):
    """How a value of TaskExec's ``field`` becomes what the database driver takes.

    Returns ``adapt(value, connection)``, or None when the value goes as it
    is. The workers write these columns for every task, and only some need
    the field's own machinery: text goes as it is, datetimes come as Django
    makes them (timezone.now()), a foreign key as the primary key it holds.
    """
    if isinstance(field, (models.CharField, models.TextField)):
        return None
    if isinstance(field, models.DateTimeField):
        return _adapt_datetime
    return field.get_db_prep_save


def _adapt_datetime(value, connection):
    return connection.ops.adapt_datetimefield_value(value)


@functools.lru_cache(maxsize=1024)
def _finish_sql(alias, names, rows):
    """The finishing UPDATE of ``rows`` rows, of the fields ``names``, on database ``alias``.

    Returned with the adapter of each field (see ``column_adapter``).

    Its parameters: for each row, the execution's id, its worker's id, then
    the values of ``names``. The rows come in as a table of VALUES, joined
    to the executions by id.
    """
    database = connections[alias]
    quote = database.ops.quote_name
    table = quote(TaskExec._meta.db_table)
    fields = [TaskExec._meta.get_field(name) for name in names]
    columns = [quote(field.column) for field in fields]
    placeholders = ["%s"] * (len(fields) + 2)
    if database.vendor == "postgresql":
        # Parameters of VALUES have no type of their own: the first row's
        # casts give every row its column types.
        types = ["bigint", "bigint", *(field.db_type(database) for field in fields)]
        first = [f"CAST(%s AS {kind})" for kind in types]
    else:
        first = placeholders
    values = ", ".join([f"({', '.join(first)})", *[f"({', '.join(placeholders)})"] * (rows - 1)])
    assignments = ", ".join(f"{column} = ending.{column}" for column in columns)
    sql = (
        f"WITH ending(execution_id, fence_worker_id, {', '.join(columns)}) AS (VALUES {values}) "
        f"UPDATE {table} SET {assignments} FROM ending "
        f"WHERE {table}.id = ending.execution_id AND {table}.state = '{States.PROCESSING}' "
        f"AND {table}.worker_id = ending.fence_worker_id RETURNING {table}.id"
    )
    return _in_driver_style(database.vendor, sql), tuple(column_adapter(field) for field in fields)


def release(ids, worker_id):
    """Give tasks this worker claimed but will not run back to the queue."""
    return TaskExec.objects.filter(id__in=ids, state=States.PROCESSING, worker_id=worker_id).update(
        state=States.QUEUED, started=None, worker=None
    )


def wake_sleeping(queue_filter):
    """Queue the SLEEPING tasks whose due time has come; returns how many."""
    now = timezone.now()
    due = queue_filter.apply(TaskExec.objects.filter(state=States.SLEEPING, due__lte=now))
    return _retry_while_locked(lambda: due.update(state=States.QUEUED))


def has_waiting_work(queue_filter):
    """Whether a task is QUEUED, or SLEEPING with its time come, for these queues."""
    database = _queue_database()
    queues = _queues_to_probe(database, queue_filter)
    if queues != ():
        # The claim's own reading, for one row: an EXISTS would let the
        # planner guess that a queue's rows are spread over the whole table.
        with database.cursor() as cursor:
            cursor.execute(_selection_sql(database.alias, _probes(queues)), _selection_params(queues, 1))
            if cursor.fetchone():
                return True
    due = TaskExec.objects.using(database.alias).filter(state=States.SLEEPING, due__lte=timezone.now())
    return queue_filter.apply(due).exists()


def _retry_while_locked(operation, attempts=50):
    """Run ``operation``, retrying SQLite's "database is locked" with backoff."""
    backoff = Backoff(first=0.005, longest=1.0)
    for attempt in range(attempts):
        try:
            return operation()
        except OperationalError as error:
            if "locked" not in str(error) or attempt == attempts - 1:
                raise
            delay = backoff.next_delay()
            logger.debug("database is locked, retrying in %.3fs", delay)
            time.sleep(delay)
