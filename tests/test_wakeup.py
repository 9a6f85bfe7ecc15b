"""Idle workers are woken when a task is queued, rather than at their next tick.

Every worker here polls and beats once a minute: a task done within the
tests' wait was found through the wake-up, not at a tick or a heartbeat.
"""

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock, skipUnless

from django.db import connection
from django.db.utils import ConnectionHandler
from django.test import SimpleTestCase, TransactionTestCase, override_settings

from django_toosimple_q import wakeup
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker

from .helpers import start_worker, wait_for
from .testapp import tasks

States = TaskExec.States
A_MINUTE = 60
ON_SQLITE = connection.vendor == "sqlite"


def succeeded(execution):
    return lambda: TaskExec.objects.get(pk=execution.pk).state == States.SUCCEEDED


def wait_for_idle(first):
    """Wait until the worker ran ``first`` and went back to waiting for work.

    Ran, it was claimed, at the start or by a wake-up; then the worker looks
    for more and waits. Should it still be looking (a loaded machine), the
    next task is found without the wake-up: the test passes, it cannot fail
    for that.
    """
    wait_for(succeeded(first), timeout=A_MINUTE, message="the first task")
    time.sleep(0.5)


def poke_from_another_process(folder, queue):
    """``wakeup.poke()`` as another process sends it: to this process's sockets too."""
    with mock.patch.object(wakeup, "_local_sockets", set()):
        wakeup.poke(folder, queue)


def sockets_in(folder):
    try:
        return {name for name in os.listdir(folder) if name.endswith(wakeup.SOCKET_SUFFIX)}
    except FileNotFoundError:
        return set()


@override_settings(TOOSIMPLEQ_HEARTBEAT=A_MINUTE)
class InProcessWakeUpTests(TransactionTestCase):
    def test_a_task_queued_in_this_process_wakes_its_worker_on_commit(self):
        worker = Worker(tick=A_MINUTE, schedules=False)
        worker.start()
        self.addCleanup(worker.join)
        self.addCleanup(worker.stop)
        wait_for_idle(tasks.add.queue(0))
        execution = tasks.add.queue(1, 2)
        wait_for(succeeded(execution), timeout=20, message="the task, long before the next tick")

    def test_a_task_of_a_queue_it_does_not_serve_wakes_no_worker(self):
        worker = Worker(tick=A_MINUTE, schedules=False, queues=["other"])
        worker.start()
        self.addCleanup(worker.join)
        self.addCleanup(worker.stop)
        wait_for(lambda: WorkerStatus.objects.filter(stopped=None).exists(), message="the worker to start")
        execution = tasks.add.queue(1, 2)
        worker.stop()
        worker.join()
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).state, States.QUEUED)


class OtherProcessWakeUpTests(TransactionTestCase):
    """PostgreSQL: NOTIFY. SQLite: a poke on the worker's socket."""

    def test_a_task_queued_in_another_process_wakes_an_idle_worker(self):
        # The worker timeout above the heartbeat, or the system check E004 stops the worker.
        env = {"TOOSIMPLEQ_TEST_HEARTBEAT": A_MINUTE, "TOOSIMPLEQ_TEST_WORKER_TIMEOUT": 2 * A_MINUTE}
        worker = start_worker("--tick", str(A_MINUTE), "--no_schedules", env=env)
        self.addCleanup(worker.communicate, timeout=60)
        self.addCleanup(worker.terminate)
        # SQLite: the worker binds its socket before its first claim, which runs the first task.
        if not ON_SQLITE:
            wait_for(self.worker_listens, message="the worker to listen")
        wait_for_idle(tasks.add.queue(0))
        execution = tasks.add.queue(1, 2)
        wait_for(succeeded(execution), timeout=20, message="the task, long before the next tick")

    def worker_listens(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'")
            return cursor.fetchone()[0] > 0


@skipUnless(ON_SQLITE, "pokes are SQLite's")
@override_settings(TOOSIMPLEQ_HEARTBEAT=A_MINUTE)
class PokeTests(TransactionTestCase):
    def setUp(self):
        self.folder = wakeup.socket_folder(connection)
        os.makedirs(self.folder, exist_ok=True)

    def start_worker(self, **options):
        """A worker of this process, once its socket is bound."""
        before = sockets_in(self.folder)
        worker = Worker(tick=A_MINUTE, schedules=False, **options)
        worker.start()
        self.addCleanup(worker.join)
        self.addCleanup(worker.stop)
        wait_for(lambda: sockets_in(self.folder) - before, message="the worker's socket")
        return worker

    def test_the_socket_of_a_dead_worker_is_removed_by_the_next_queue(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as dead:
            dead.bind(os.path.join(self.folder, "dead" + wakeup.SOCKET_SUFFIX))
        self.assertIn("dead" + wakeup.SOCKET_SUFFIX, sockets_in(self.folder))
        execution = tasks.add.queue(1, 2)
        self.assertEqual(execution.state, States.QUEUED)
        self.assertNotIn("dead" + wakeup.SOCKET_SUFFIX, sockets_in(self.folder))

    def test_a_worker_that_reads_no_pokes_never_holds_up_queue(self):
        path = os.path.join(self.folder, "asleep" + wakeup.SOCKET_SUFFIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as asleep:
            asleep.bind(path)
            self.addCleanup(os.unlink, path)
            # More than the kernel queues for a socket that is not read (Linux: 10 by default).
            queueing = threading.Thread(target=lambda: [tasks.add.queue(n) for n in range(100)], daemon=True)
            queueing.start()
            queueing.join(timeout=A_MINUTE)
            self.assertFalse(queueing.is_alive(), "queue() blocked on a worker that reads no pokes")
        self.assertEqual(TaskExec.objects.count(), 100)

    def test_queue_with_no_worker_alive(self):
        shutil.rmtree(self.folder)
        execution = tasks.add.queue(1, 2)
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).state, States.QUEUED)

    def test_a_poke_for_a_queue_it_does_not_serve_does_not_wake_the_worker(self):
        # Patched before the worker starts, which hands task_queued to its listener.
        heard = self.enterContext(mock.patch.object(Worker, "task_queued", autospec=True, side_effect=Worker.task_queued))
        worker = self.start_worker(queues=["other"])
        with mock.patch.object(worker, "wake", wraps=worker.wake) as wake:
            poke_from_another_process(self.folder, "default")
            poke_from_another_process(self.folder, "other")
            wait_for(lambda: heard.call_count == 2, message="both pokes")
        self.assertEqual([call.args[1] for call in heard.call_args_list], ["default", "other"])
        self.assertEqual(wake.call_count, 1)

    def test_a_worker_removes_its_socket_when_it_stops(self):
        before = sockets_in(self.folder)
        worker = self.start_worker()
        self.assertEqual(len(sockets_in(self.folder) - before), 1)
        worker.stop()
        worker.join()
        self.assertEqual(sockets_in(self.folder) - before, set())

    def test_without_unix_sockets_workers_wait_for_their_tick(self):
        with mock.patch.object(wakeup, "CAN_POKE", False):
            self.assertIsNone(wakeup.start_listener(lambda queue: None, "default", name="test"))
            self.assertIsNone(wakeup.socket_folder(connection))
            execution = tasks.add.queue(1, 2)
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).state, States.QUEUED)


class SocketFolderTests(SimpleTestCase):
    @staticmethod
    def sqlite(name):
        return ConnectionHandler({"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": name}})["default"]

    def test_beside_the_database_file(self):
        self.assertEqual(wakeup.socket_folder(self.sqlite("/srv/site/db.sqlite3")), "/srv/site/db.sqlite3-toosimpleq")

    def test_beside_the_file_of_a_uri(self):
        folder = wakeup.socket_folder(self.sqlite("file:/srv/my%20site/db.sqlite3?cache=shared"))
        self.assertEqual(folder, "/srv/my site/db.sqlite3-toosimpleq")

    def test_none_for_a_database_in_memory(self):
        self.assertIsNone(wakeup.socket_folder(self.sqlite(":memory:")))
        self.assertIsNone(wakeup.socket_folder(self.sqlite("file:memorydb?mode=memory&cache=shared")))

    def test_none_for_another_database(self):
        other = ConnectionHandler({"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "x"}})["default"]
        self.assertIsNone(wakeup.socket_folder(other))

    def test_a_database_too_deep_for_a_socket_path_has_its_folder_in_the_temporary_directory(self):
        deep = Path(tempfile.mkdtemp(prefix="toosimpleq-deep-"))
        self.addCleanup(shutil.rmtree, deep)
        database = deep / ("d" * 100) / "db.sqlite3"
        database.parent.mkdir()
        database.touch()
        folder = wakeup.socket_folder(self.sqlite(str(database)))
        self.assertEqual(os.path.dirname(folder), tempfile.gettempdir())
        self.assertEqual(folder, wakeup.socket_folder(self.sqlite(str(database))))
        self.addCleanup(shutil.rmtree, folder, ignore_errors=True)
        # A listener binds there, and a poke reaches it.
        heard = []
        listener = wakeup.SocketListener(heard.append, folder, "test", str(database))
        listener.start()
        self.addCleanup(listener.join)
        self.addCleanup(listener.stop)
        poke_from_another_process(folder, "default")
        wait_for(lambda: heard, message="the poke")
        self.assertEqual(heard, ["default"])
