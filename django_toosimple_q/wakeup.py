"""Telling idle workers that a task was queued, so they need not wait a tick.

Workers in this process (embedded mode) are woken when the queueing
transaction commits. Workers elsewhere, on PostgreSQL: the queueing
transaction sends a NOTIFY, which PostgreSQL delivers when it commits, and
each worker LISTENs on a connection of its own. Elsewhere (SQLite), other
processes' workers find the task at their next tick.
"""

import logging
import threading
import weakref
from functools import partial

from django.db import DatabaseError, connections, transaction

logger = logging.getLogger("django_toosimple_q")

CHANNEL = "toosimpleq"

_local_workers = weakref.WeakSet()


def task_queued(queue, using):
    """Call in the transaction that queued a task on ``queue``: wakes this process's workers when it commits.

    The NOTIFY for the other processes' workers goes with the INSERT
    (models.py), in the same statement.
    """
    if _local_workers:
        transaction.on_commit(partial(_wake_local_workers, queue), using=using)


def _wake_local_workers(queue):
    for worker in list(_local_workers):
        worker.task_queued(queue)


def add_local_worker(worker):
    _local_workers.add(worker)


def remove_local_worker(worker):
    _local_workers.discard(worker)


def can_listen(connection):
    """Whether NOTIFY can reach a worker on this connection: PostgreSQL with psycopg >= 3.2.

    Listening with a timeout, which stop() relies on, came with psycopg 3.2.
    """
    driver = connection.Database
    if connection.vendor != "postgresql" or driver.__name__ != "psycopg":
        return False
    return tuple(int(part) for part in driver.__version__.split(".")[:2]) >= (3, 2)


class Listener(threading.Thread):
    """Calls ``on_task_queued(queue)`` for each NOTIFY on database ``using``, until ``stop()``.

    A lost connection is opened again after a pause; meanwhile the worker
    still polls at its tick, so nothing waits for the listener.
    """

    def __init__(self, on_task_queued, using, name):
        super().__init__(name=name, daemon=True)
        self.on_task_queued = on_task_queued
        self.using = using  # the alias of the queue's database
        self._stopping = threading.Event()

    def stop(self):
        self._stopping.set()

    def run(self):
        # connections[...] is per thread: this is the listener's own connection.
        connection = connections[self.using]
        try:
            while not self._stopping.is_set():
                try:
                    self._listen(connection)
                except (DatabaseError, connection.Database.Error) as error:
                    logger.warning("listening for queued tasks failed (%s); retrying", error)
                    connection.close()
                    self._stopping.wait(1.0)
        finally:
            connection.close()

    def _listen(self, connection):
        connection.ensure_connection()
        raw = connection.connection
        raw.execute(f"LISTEN {CHANNEL}")
        while not self._stopping.is_set():
            # The timeout bounds how long stop() waits for this thread.
            for notify in raw.notifies(timeout=0.5):
                self.on_task_queued(notify.payload)
