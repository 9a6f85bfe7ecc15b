"""The queue in a database of its own: every statement of the package follows Django's routers.

The application's tables stay on "default"; tests/routers.py sends the
queue's to "queue". Nothing of the queue may land on "default": its copy of
the queue's tables (the test runner migrates every app on both) stays empty.
"""

import contextlib
import datetime
import os
import signal
import tempfile
from pathlib import Path
from unittest import mock

from django.db import connections
from django.test import TransactionTestCase, override_settings

from django.utils import timezone

from django_toosimple_q.models import ScheduleExec, TaskExec, TaskExecQuerySet, WorkerStatus, queue_database
from django_toosimple_q.registry import Schedule, Task, register, register_schedule
from django_toosimple_q.worker import recovery
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler
from django_toosimple_q.worker.loop import Worker

from .helpers import IsolatedRegistries, run_worker, start_worker, wait_for
from .testapp import tasks
from .testapp.models import Execution

States = TaskExec.States
QUEUE_TABLES = (TaskExec, WorkerStatus, ScheduleExec)


@override_settings(DATABASE_ROUTERS=["tests.routers.QueueRouter"])
class RoutedQueueTests(IsolatedRegistries, TransactionTestCase):
    databases = {"default", "queue"}

    def tearDown(self):
        for model in QUEUE_TABLES:
            self.assertFalse(model.objects.using("default").exists(), f"{model.__name__} rows on default")

    def routed_env(self, **extra):
        """The environment of a worker subprocess with the same routing, on these test databases."""
        return {"TOOSIMPLEQ_TEST_ROUTED": 1, "TOOSIMPLEQ_TEST_QUEUE_DB_NAME": connections["queue"].settings_dict["NAME"], **extra}

    def test_the_queue_database_is_the_routers(self):
        self.assertEqual(queue_database(), "queue")
        with override_settings(DATABASE_ROUTERS=[]):
            self.assertEqual(queue_database(), "default")

    def test_an_in_process_worker_runs_the_tasks_queued_on_the_queue_database(self):
        executions = [tasks.add.queue(i, 1) for i in range(3)]
        tasks.record.queue("app data")
        self.assertEqual(TaskExec.objects.using("queue").count(), 4)
        self.assertEqual(Worker(threads=2, until_done=True).run(), 0)
        self.assertEqual([TaskExec.objects.get(pk=e.pk).result for e in executions], [1, 2, 3])
        self.assertEqual(TaskExec.objects.using("queue").filter(state=States.SUCCEEDED).count(), 4)
        self.assertEqual(WorkerStatus.objects.using("queue").get().exit_code, 0)
        # The task's own writes follow the routers too: the application's table is on default.
        self.assertTrue(Execution.objects.using("default").filter(key="app data").exists())

    def test_a_failed_task_is_retried_on_the_queue_database(self):
        failed = tasks.flaky.queue("flaky-key")
        Worker(until_done=True).run()
        chain = TaskExec.objects.using("queue").order_by("id")
        self.assertEqual([row.state for row in chain], [States.FAILED, States.SUCCEEDED])
        self.assertEqual(chain[0].pk, failed.pk)

    @contextlib.contextmanager
    def transactions_seen_by(self, cls, method):
        """Whether the queue's database was in a transaction at each call of ``cls.method``."""
        seen = []
        original = getattr(cls, method)

        def recording(*args, **kwargs):
            seen.append(connections["queue"].in_atomic_block)
            return original(*args, **kwargs)

        with mock.patch.object(cls, method, recording):
            yield seen

    def test_a_retry_is_stored_in_one_transaction_with_the_failure(self):
        tasks.flaky.queue("retried-key")
        with self.transactions_seen_by(TaskExecQuerySet, "requeue") as seen:
            Worker(until_done=True).run()
        self.assertEqual(seen, [True])

    def test_a_reaped_task_is_queued_again_in_one_transaction_with_its_interruption(self):
        dead = WorkerStatus.objects.create(
            label="dead", hostname="h", pid=0, last_tick=timezone.now() - datetime.timedelta(hours=1)
        )
        orphan = TaskExec.objects.create(task_name="tests.add", args=[1], state=States.PROCESSING, worker=dead)
        with self.transactions_seen_by(TaskExecQuerySet, "requeue") as seen:
            [replacement] = recovery.reap_dead_workers()
        self.assertEqual(seen, [True])
        self.assertEqual(TaskExec.objects.get(pk=orphan.pk).replaced_by, replacement)

    def test_a_schedule_is_queued_in_one_transaction_with_its_compare_and_set(self):
        task = register(Task(tasks.add, name="routing.add"))
        register_schedule(Schedule(task, "0 8 * * *", name="routing.add", last_run=None, args=[1]))
        scheduler = Scheduler(QueueFilter())
        scheduler.sync()
        with self.transactions_seen_by(Schedule, "queue_all") as seen:
            [queued] = scheduler.run_due()
        self.assertEqual(seen, [True])
        self.assertEqual(ScheduleExec.objects.using("queue").get(name="routing.add").last_task, queued)

    def test_a_worker_command_runs_tasks_and_schedules_on_the_queue_database(self):
        execution = tasks.add.queue(2, 3)
        finished = run_worker(
            "--until_done", "--queue", "default", "--queue", "at_start_a",
            env=self.routed_env(TOOSIMPLEQ_TEST_SCHEDULE_APP=1),
        )
        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).result, 5)
        schedule = ScheduleExec.objects.using("queue").get(name="scheduleapp.at_start_a")
        self.assertEqual(schedule.last_task.state, States.SUCCEEDED)
        self.assertEqual(schedule.last_task.result, "a")

    def test_the_listener_of_a_worker_command_hears_the_queue_database(self):
        # Nor a heartbeat: the loop also looks for work after each.
        env = self.routed_env(TOOSIMPLEQ_TEST_HEARTBEAT=600, TOOSIMPLEQ_TEST_WORKER_TIMEOUT=1200)
        worker = start_worker("--tick", "600", env=env)
        try:
            wait_for(lambda: WorkerStatus.objects.filter(pid=worker.pid).exists(), message="the worker to register")
            execution = tasks.add.queue(4, 4)
            # Long before the worker's next tick: only the wake-up (NOTIFY, or a poke on SQLite) can have woken it.
            wait_for(lambda: TaskExec.objects.get(pk=execution.pk).state == States.SUCCEEDED, timeout=20)
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.communicate()
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).result, 8)

    def test_a_killed_workers_task_is_found_and_run_again_on_the_queue_database(self):
        gate = Path(tempfile.mkdtemp(prefix="toosimpleq-routing-")) / "gate"
        env = self.routed_env(TOOSIMPLEQ_TEST_CHAOS_APP=1, TOOSIMPLEQ_TEST_HEARTBEAT=0.2, TOOSIMPLEQ_TEST_WORKER_TIMEOUT=1)
        held = TaskExec.objects.create(task_name="chaos.hold", args=[None, str(gate)], queue="chaos")
        worker = start_worker("--queue", "chaos", env=env)
        try:
            wait_for(lambda: TaskExec.objects.get(pk=held.pk).state == States.PROCESSING, message="the task to run")
        finally:
            worker.send_signal(signal.SIGKILL)
            worker.communicate()
        dead = WorkerStatus.objects.get(pid=worker.pid)
        wait_for(lambda: WorkerStatus.objects.get(pk=dead.pk).state == WorkerStatus.States.TIMEDOUT, message="a timeout")
        gate.touch()
        finished = run_worker("--until_done", "--queue", "chaos", env=env)
        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual(TaskExec.objects.get(pk=held.pk).state, States.INTERRUPTED)
        replacement = TaskExec.objects.get(pk=held.pk).replaced_by
        self.assertEqual((replacement.state, replacement.result), (States.SUCCEEDED, "done"))
        os.remove(gate)
