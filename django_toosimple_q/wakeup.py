"""Telling idle workers that a task was queued, so they need not wait a tick.

Workers in this process (embedded mode) are woken when the queueing
transaction commits. Workers elsewhere, on PostgreSQL: the queueing
transaction sends a NOTIFY, which PostgreSQL delivers when it commits, and
each worker LISTENs on a connection of its own. On an SQLite file, which has
no NOTIFY: each worker binds a Unix datagram socket in a folder beside the
database file, and the process that queued the task pokes every socket there
once its transaction commits. Elsewhere (an in-memory database, a platform
without Unix sockets) other processes' workers find the task at their next
tick, which stays the safety net everywhere: a lost wake-up costs a tick.
"""

import functools
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
import weakref
from urllib.parse import unquote, urlsplit

from django.db import DatabaseError, connections, transaction

logger = logging.getLogger("django_toosimple_q")

CHANNEL = "toosimpleq"

CAN_POKE = hasattr(socket, "AF_UNIX")  # not on Windows
SOCKET_SUFFIX = ".sock"
# The longest socket path every platform binds (macOS: 103 bytes, Linux: 107).
LONGEST_SOCKET_PATH = 100
SOCKET_NAME_LENGTH = 16 + len(SOCKET_SUFFIX)
# A queue's name is at most 255 characters: 4 bytes each at most in UTF-8.
LONGEST_POKE = 1024

_local_workers = weakref.WeakSet()
# The sockets of this process's workers, which are woken without a poke.
_local_sockets = set()


def task_queued(queue, using):
    """Call in the transaction that queued a task on ``queue``: wakes idle workers when it commits.

    This process's workers directly, those of other processes through a poke
    on SQLite. On PostgreSQL, the NOTIFY for the other processes' workers
    goes with the INSERT (models.py), in the same statement.
    """
    folder = socket_folder(connections[using])
    if _local_workers or folder:
        transaction.on_commit(functools.partial(_wake_workers, queue, folder), using=using)


def _wake_workers(queue, folder):
    # The other processes' first: this process's, once woken, compete with
    # the caller for the interpreter.
    if folder:
        poke(folder, queue)
    for worker in list(_local_workers):
        worker.task_queued(queue)


def add_local_worker(worker):
    _local_workers.add(worker)


def remove_local_worker(worker):
    _local_workers.discard(worker)


def start_listener(on_task_queued, using, name):
    """Start bringing the wake-ups of other processes to ``on_task_queued(queue)``.

    Returns the listener, to ``stop()`` and ``join()``; or None where they
    cannot come and the worker finds their tasks at its tick.
    """
    connection = connections[using]
    folder = socket_folder(connection)
    if can_listen(connection):
        listener = NotifyListener(on_task_queued, using, name)
    elif folder:
        try:
            listener = SocketListener(on_task_queued, folder, name, database_file(connection))
        except OSError as error:
            logger.warning(
                "no wake-ups from other processes in %s (%s): tasks they queue wait for this worker's tick",
                folder,
                error,
            )
            return None
    else:
        return None
    listener.start()
    return listener


def can_listen(connection):
    """Whether NOTIFY can reach a worker on this connection: PostgreSQL with psycopg >= 3.2.

    Listening with a timeout, which stop() relies on, came with psycopg 3.2.
    """
    driver = connection.Database
    if connection.vendor != "postgresql" or driver.__name__ != "psycopg":
        return False
    return tuple(int(part) for part in driver.__version__.split(".")[:2]) >= (3, 2)


class NotifyListener(threading.Thread):
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


# Pokes: SQLite, across processes.


def socket_folder(connection):
    """The folder where the workers of this SQLite database file bind their sockets; None where pokes cannot go."""
    path = database_file(connection)
    return path and _folder_beside(path)


def database_file(connection):
    """The real path of the database file of an SQLite ``connection``; None for another database, or one in memory."""
    if not CAN_POKE or connection.vendor != "sqlite" or connection.is_in_memory_db():
        return None
    return _real_path(str(connection.settings_dict["NAME"]))


@functools.lru_cache(maxsize=16)
def _real_path(name):
    # Django opens SQLite databases with uri=True: NAME may be a file: URI.
    path = unquote(urlsplit(name).path) if name.startswith("file:") else name
    return os.path.realpath(path)


@functools.lru_cache(maxsize=16)
def _folder_beside(database_path):
    """``<database file>-toosimpleq``, as SQLite names its own -wal and -shm files.

    Where that would make socket paths longer than Unix sockets take, a
    folder in the temporary directory named after the database's path.
    """
    folder = f"{database_path}-toosimpleq"
    if len(os.fsencode(folder)) + 1 + SOCKET_NAME_LENGTH > LONGEST_SOCKET_PATH:
        digest = hashlib.sha256(os.fsencode(database_path)).hexdigest()[:16]
        folder = os.path.join(tempfile.gettempdir(), f"toosimpleq-{digest}")
    return folder


def poke(folder, queue):
    """Tell every worker bound in ``folder`` that a task was queued on ``queue``.

    This process's workers are left out: they are woken directly. Never
    blocks nor raises: a worker the poke does not reach finds the task at
    its tick. The socket of a worker that died without removing it
    refuses the poke, and is removed.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return  # no worker ever listened here
    message = queue.encode()
    for name in names:
        if not name.endswith(SOCKET_SUFFIX):
            continue
        path = os.path.join(folder, name)
        if path in _local_sockets:
            continue
        try:
            _sender().sendto(message, path)
        except ConnectionRefusedError:
            _remove(path)
        except OSError as error:
            # Full (that worker has pokes waiting already), gone meanwhile,
            # or not ours to write to.
            logger.debug("could not poke %s: %s", path, error)


@functools.cache
def _sender():
    # One socket for every thread and poke; non-blocking, so that a worker
    # that does not read its pokes never holds up a queue().
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.setblocking(False)
    return sender


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass  # another process removed it first


class SocketListener(threading.Thread):
    """Calls ``on_task_queued(queue)`` for each poke in this worker's socket in ``folder``, until ``stop()``.

    The socket is bound when the listener is made, before the worker's first
    claim, so that no task queued after that claim waits for a tick. Anyone
    who may write the database file may poke it.
    """

    def __init__(self, on_task_queued, folder, name, database_path):
        super().__init__(name=name, daemon=True)
        self.on_task_queued = on_task_queued
        os.makedirs(folder, exist_ok=True)
        self.path = os.path.join(folder, secrets.token_hex(8) + SOCKET_SUFFIX)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.socket.bind(self.path)
            os.chmod(self.path, stat.S_IMODE(os.stat(database_path).st_mode) & 0o666)
        except OSError:
            self._close()
            raise
        # A safety net for stop(): should its poke not come, the thread still ends.
        self.socket.settimeout(1.0)
        _local_sockets.add(self.path)
        self._stopping = threading.Event()

    def stop(self):
        self._stopping.set()
        try:
            _sender().sendto(b"", self.path)  # ends the wait in run() at once
        except OSError:
            pass  # full of pokes: run() reads one and sees the stop

    def run(self):
        try:
            while not self._stopping.is_set():
                try:
                    message = self.socket.recv(LONGEST_POKE)
                except TimeoutError:
                    continue
                if not self._stopping.is_set():
                    self.on_task_queued(message.decode(errors="replace"))
        finally:
            self._close()

    def _close(self):
        _local_sockets.discard(self.path)
        _remove(self.path)
        self.socket.close()
