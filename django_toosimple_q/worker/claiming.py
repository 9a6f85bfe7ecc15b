"""The SQL of a task's way through a worker: claiming it, and storing its end.

Both run once per task or batch, so both are written out as SQL once and
sent through a cursor of the driver itself (see ``_run``).

PostgreSQL: one ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING`` statement, so concurrent workers skip each other's rows instead
of waiting on them. SQLite has no row locks: the same UPDATE runs in a write
transaction taken up front (BEGIN IMMEDIATE), which serialises claimers.
Other databases (MySQL) use the ORM: ``select_for_update(skip_locked=True)``
then an UPDATE, in one transaction.
"""

import functools
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import NamedTuple

from django.db import OperationalError, connections, transaction
from django.utils import timezone

from .. import conf, serialization
from ..models import TaskExec, column_adapter, distinct_values, queue_database
from .backoff import Backoff

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States

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


@dataclass(frozen=True)
class QueueFilter:
    """Which queues a worker serves: only ``queues`` if given, none of ``excluded``.

    The claim reads the queues one by one (``_queues_to_probe``); the rarer
    statements filter with ``apply``.
    """

    queues: tuple = ()
    excluded: tuple = ()

    def apply(self, queryset):
        if self.queues:
            queryset = queryset.filter(queue__in=self.queues)
        if self.excluded:
            queryset = queryset.exclude(queue__in=self.excluded)
        return queryset

    def serves(self, queue):
        return (not self.queues or queue in self.queues) and queue not in self.excluded


def claim(worker_id, limit, queue_filter):
    """Flip up to ``limit`` QUEUED tasks to PROCESSING for this worker, and return them."""
    if limit <= 0:
        return []
    database = _queue_database()
    if database.vendor == "postgresql":
        return _claim_returning(database, worker_id, limit, queue_filter, lock_clause=" FOR UPDATE SKIP LOCKED")
    if database.vendor == "sqlite":
        if database.in_atomic_block:
            # A caller's transaction (a TestCase) cannot begin another one:
            # the UPDATE takes the write lock within it.
            return _claim_returning(database, worker_id, limit, queue_filter)
        return _retry_while_locked(lambda: _claim_sqlite(database, worker_id, limit, queue_filter))
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


@functools.lru_cache
def _selection_sql(alias, probes, lock_clause=""):
    """The SELECT of the ids of the next QUEUED rows on database ``alias``, in claim order, with Django's placeholders.

    ``probes``: the number of queues read one by one, or None for one read
    of every queue; its parameters come from ``_selection_params``.
    """
    table = connections[alias].ops.quote_name(TaskExec._meta.db_table)
    # The states are written in the SQL, not passed as parameters: a plan
    # made once for a prepared statement can then use the partial indexes.
    waiting = f"SELECT id, priority, due FROM {table} WHERE state = '{States.QUEUED}'"
    if probes is None:
        return f"SELECT id FROM ({waiting} {ORDER} LIMIT %s{lock_clause}) AS waiting"
    # One ordered read of each queue's own index, merged in claim order:
    # the other queues' rows are never read.
    probe = f"SELECT * FROM ({waiting} AND queue = %s {ORDER} LIMIT %s{lock_clause}) AS probe"
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
    sql = (
        f"UPDATE {table} SET state = '{States.PROCESSING}', started = %s, worker_id = %s, dedup_key = NULL "
        f"WHERE state = '{States.QUEUED}' AND id {among} RETURNING {', '.join(CLAIMED_COLUMNS)}"
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


def _claim_sqlite(database, worker_id, limit, queue_filter):
    # Django's atomic() would BEGIN DEFERRED unless the user set
    # transaction_mode; the write lock must be taken before reading.
    _run(database, "BEGIN IMMEDIATE", (), _nothing)
    try:
        claimed = _claim_returning(database, worker_id, limit, queue_filter)
    except BaseException:
        _run(database, "ROLLBACK", (), _nothing)
        raise
    _run(database, "COMMIT", (), _nothing)
    return claimed


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


def _rowcount(cursor):
    return cursor.rowcount


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
    taken = TaskExec.objects.filter(id__in=ids, state=States.PROCESSING, worker_id=worker_id)
    rows = taken.order_by("-priority", "due", "id").values_list(*CLAIMED_COLUMNS)
    return [ClaimedTask(*row) for row in rows]


# The columns that hold JSON: Django has the drivers return it as text, for
# JSONField to decode.
JSON_COLUMNS = [CLAIMED_COLUMNS.index("args"), CLAIMED_COLUMNS.index("kwargs")]


def _claimed_task(row):
    values = list(row)
    for position in JSON_COLUMNS:
        data = json.loads(values[position]) if isinstance(values[position], str) else values[position]
        values[position] = serialization.decode(data)
    return ClaimedTask(*values)


def finish(execution_id, worker_id, outcome):
    """Store how an execution ended: ``outcome`` maps TaskExec fields to values.

    Fenced on (PROCESSING, this worker): returns 0 when the row was taken
    from this worker (taken for dead, its task queued again) meanwhile.
    """
    database = _queue_database()
    names = tuple(outcome)
    sql, adapters = _finish_sql(database.alias, names)
    values = [
        value if adapt is None else adapt(value, database)
        for value, adapt in zip(outcome.values(), adapters)
    ]
    return _run(database, sql, [*values, execution_id, worker_id], _rowcount)


@functools.lru_cache
def _finish_sql(alias, names):
    """The finishing UPDATE of the fields ``names`` on database ``alias``, and for each, its adapter (see ``column_adapter``)."""
    database = connections[alias]
    quote = database.ops.quote_name
    fields = [TaskExec._meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = (
        f"UPDATE {quote(TaskExec._meta.db_table)} SET {assignments} "
        f"WHERE id = %s AND state = '{States.PROCESSING}' AND worker_id = %s"
    )
    return _in_driver_style(database.vendor, sql), tuple(column_adapter(field) for field in fields)


def interrupted_before(ids):
    """Those of the executions ``ids`` that replace an interrupted run."""
    if not ids:
        return set()
    return set(
        TaskExec.objects.filter(replaced_by__in=ids, state=States.INTERRUPTED).values_list("replaced_by", flat=True)
    )


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
