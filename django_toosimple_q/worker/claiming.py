"""The SQL of a task's way through a worker: claiming it, and storing its end.

Both run once per task or batch, so both are written out as SQL once and
sent through a cursor of the driver itself (see ``_driver_cursor``).

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
import time
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections, models, transaction
from django.utils import timezone

from ..models import TaskExec
from .backoff import Backoff

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States

# Claimed rows carry what running them needs, and nothing more.
CLAIMED_COLUMNS = ("id", "task_name", "args", "kwargs", "queue", "priority", "retries", "retry_delay")


@dataclass(frozen=True)
class ClaimedTask:
    id: int
    task_name: str
    args: list
    kwargs: dict
    queue: str
    priority: int
    retries: int
    retry_delay: float


@dataclass(frozen=True)
class QueueFilter:
    """Which queues a worker serves: only ``queues`` if given, none of ``excluded``."""

    queues: tuple = ()
    excluded: tuple = ()

    def apply(self, queryset):
        if self.queues:
            queryset = queryset.filter(queue__in=self.queues)
        if self.excluded:
            queryset = queryset.exclude(queue__in=self.excluded)
        return queryset

    def sql(self):
        """A WHERE fragment and its parameters."""
        fragment, params = "", []
        if self.queues:
            fragment += f" AND queue IN ({', '.join(['%s'] * len(self.queues))})"
            params += self.queues
        if self.excluded:
            fragment += f" AND queue NOT IN ({', '.join(['%s'] * len(self.excluded))})"
            params += self.excluded
        return fragment, params

    def serves(self, queue):
        return (not self.queues or queue in self.queues) and queue not in self.excluded


def claim(worker_id, limit, queue_filter):
    """Flip up to ``limit`` QUEUED tasks to PROCESSING for this worker, and return them."""
    if limit <= 0:
        return []
    if connection.vendor == "postgresql":
        return _claim_returning(worker_id, limit, queue_filter, lock_clause=" FOR UPDATE SKIP LOCKED")
    if connection.vendor == "sqlite":
        return _retry_while_locked(lambda: _claim_sqlite(worker_id, limit, queue_filter))
    return _claim_with_orm(worker_id, limit, queue_filter)


@functools.lru_cache
def _claim_sql(vendor, queue_filter, lock_clause):
    """The claim statement, and its parameters after (started, worker_id): the queues, then the limit."""
    table = connection.ops.quote_name(TaskExec._meta.db_table)
    queue_sql, queue_params = queue_filter.sql()
    # The states are written in the SQL, not passed as parameters: a plan
    # made once for a prepared statement can then use the partial index.
    select = (
        f"SELECT id FROM {table} WHERE state = '{States.QUEUED}'{queue_sql} "
        f"ORDER BY priority DESC, due, id LIMIT %s{lock_clause}"
    )
    # PostgreSQL may run an IN (subquery) again for each row it updates, each
    # run locking other rows, and so claim far more than the limit; the
    # subquery of ARRAY() runs once.
    among = f"= ANY(ARRAY({select}))" if vendor == "postgresql" else f"IN ({select})"
    sql = (
        f"UPDATE {table} SET state = '{States.PROCESSING}', started = %s, worker_id = %s, dedup_key = NULL "
        f"WHERE state = '{States.QUEUED}' AND id {among} RETURNING {', '.join(CLAIMED_COLUMNS)}"
    )
    return _in_driver_style(vendor, sql), tuple(queue_params)


def _claim_returning(worker_id, limit, queue_filter, lock_clause=""):
    database = connections[DEFAULT_DB_ALIAS]
    sql, queue_params = _claim_sql(database.vendor, queue_filter, lock_clause)
    started = database.ops.adapt_datetimefield_value(timezone.now())
    with _driver_cursor(database) as cursor:
        cursor.execute(sql, [started, worker_id, *queue_params, limit])
        return [_claimed_task(row) for row in cursor.fetchall()]


def _claim_sqlite(worker_id, limit, queue_filter):
    # Django's atomic() would BEGIN DEFERRED unless the user set
    # transaction_mode; the write lock must be taken before reading.
    with _driver_cursor(connections[DEFAULT_DB_ALIAS]) as cursor:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            claimed = _claim_returning(worker_id, limit, queue_filter)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
    return claimed


@contextmanager
def _driver_cursor(database):
    """A cursor of the database driver itself, for the statements of each task.

    Django's cursors suit SQL that changes from call to call. With psycopg
    they bind parameters on the client, so PostgreSQL parses and plans each
    statement anew; these never change, and psycopg prepares them once when
    OPTIONS["prepare_threshold"] allows (Django leaves it off by default, for
    connection poolers). On SQLite it spares rewriting every statement.
    Errors are still Django's.
    ``database`` is this thread's DatabaseWrapper, looked up once by the
    caller: the ``connection`` proxy looks it up at every attribute.
    """
    with database.wrap_database_errors:
        database.ensure_connection()
        driver, raw = database.Database, database.connection
        cursor = driver.Cursor(raw) if driver.__name__ == "psycopg" else raw.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


def _in_driver_style(vendor, sql):
    """``sql`` with the driver's placeholders: sqlite3 takes ? where Django writes %s."""
    return sql.replace("%s", "?") if vendor == "sqlite" else sql


def _claim_with_orm(worker_id, limit, queue_filter):
    with transaction.atomic():
        waiting = queue_filter.apply(TaskExec.objects.filter(state=States.QUEUED))
        ids = list(
            waiting.select_for_update(skip_locked=True)
            .order_by("-priority", "due", "id")
            .values_list("id", flat=True)[:limit]
        )
        TaskExec.objects.filter(id__in=ids).update(
            state=States.PROCESSING, started=timezone.now(), worker_id=worker_id, dedup_key=None
        )
        rows = TaskExec.objects.filter(id__in=ids).values_list(*CLAIMED_COLUMNS)
        return [ClaimedTask(*row) for row in rows]


def _claimed_task(row):
    values = dict(zip(CLAIMED_COLUMNS, row))
    for column in ("args", "kwargs"):
        # Django has the drivers return JSON as text, for JSONField to decode.
        if isinstance(values[column], str):
            values[column] = json.loads(values[column])
    return ClaimedTask(**values)


def finish(execution_id, worker_id, outcome):
    """Store how an execution ended: ``outcome`` maps TaskExec fields to values.

    Fenced on (PROCESSING, this worker): returns 0 when the row was taken
    from this worker (taken for dead, its task queued again) meanwhile.
    """
    database = connections[DEFAULT_DB_ALIAS]
    names = tuple(sorted(outcome))
    sql, fields = _finish_sql(database.vendor, names)
    values = [_db_value(field, outcome[name], database) for name, field in zip(names, fields)]
    with _driver_cursor(database) as cursor:
        cursor.execute(sql, [*values, execution_id, worker_id])
        return cursor.rowcount


@functools.lru_cache
def _finish_sql(vendor, names):
    quote = connection.ops.quote_name
    fields = [TaskExec._meta.get_field(name) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = (
        f"UPDATE {quote(TaskExec._meta.db_table)} SET {assignments} "
        f"WHERE id = %s AND state = '{States.PROCESSING}' AND worker_id = %s"
    )
    return _in_driver_style(vendor, sql), fields


def _db_value(field, value, database):
    """``value`` as the driver takes it for ``field``'s column."""
    if isinstance(field, (models.CharField, models.TextField)):
        return value  # text goes as it is: spare the field's machinery
    if field.is_relation and value is not None:
        value = value.pk  # a foreign key holds the primary key of its row
    return field.get_db_prep_save(value, database)


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
    waiting = TaskExec.objects.filter(state=States.QUEUED) | TaskExec.objects.filter(
        state=States.SLEEPING, due__lte=timezone.now()
    )
    return queue_filter.apply(waiting).exists()


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
