"""Idle workers are woken when a task is queued, rather than at their next tick.

Every worker here polls and beats once a minute: a task done within the
tests' wait was found through the wake-up, not at a tick or a heartbeat.
"""

import time
from unittest import skipUnless

from django.db import connection
from django.test import TransactionTestCase, override_settings

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker

from .helpers import start_worker, wait_for
from .testapp import tasks

States = TaskExec.States
A_MINUTE = 60


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


@skipUnless(connection.vendor == "postgresql", "NOTIFY is PostgreSQL's")
class NotifyTests(TransactionTestCase):
    def test_a_task_queued_in_another_process_wakes_an_idle_worker(self):
        # The worker timeout above the heartbeat, or the system check E004 stops the worker.
        env = {"TOOSIMPLEQ_TEST_HEARTBEAT": A_MINUTE, "TOOSIMPLEQ_TEST_WORKER_TIMEOUT": 2 * A_MINUTE}
        worker = start_worker("--tick", str(A_MINUTE), "--no_schedules", env=env)
        self.addCleanup(worker.communicate, timeout=60)
        self.addCleanup(worker.terminate)
        wait_for(self.worker_listens, message="the worker to listen")
        wait_for_idle(tasks.add.queue(0))
        execution = tasks.add.queue(1, 2)
        wait_for(succeeded(execution), timeout=20, message="the task, long before the next tick")

    def worker_listens(self):
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %%'")
            return cursor.fetchone()[0] > 0
