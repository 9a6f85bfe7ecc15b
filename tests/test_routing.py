"""The queue in a database of its own: every statement of the package follows Django's routers.

The application's tables stay on "default"; a router of tests/routers.py
sends the queue's to a database of their own: "queue", of the same kind as
"default", or "pg_queue", PostgreSQL beside an application on SQLite (the
SQLite run has it when PostgreSQL is installed). Nothing of the queue may
land on "default": its copy of the queue's tables (the test runner migrates
every app on both) stays empty, and the audit below sees every statement.
"""

import contextlib
import datetime
import io
import os
import signal
import sys
import tempfile
from pathlib import Path
from unittest import mock, skipUnless

from django.conf import settings
from django.contrib.auth.models import User
from django.core import mail
from django.core.management import call_command
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.utils import CursorWrapper
from django.test import TestCase, TransactionTestCase, override_settings
from django.urls import reverse
from django.utils import timezone

from django_toosimple_q import embedded, retention, stats, store, testing
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus, queue_database
from django_toosimple_q.registry import Schedule, Task, register, register_schedule
from django_toosimple_q.worker import recovery
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler
from django_toosimple_q.worker.loop import Worker

from . import routers
from .helpers import IsolatedRegistries, run_worker, start_worker, wait_for
from .testapp import framework_tasks, tasks
from .testapp.models import Execution

States = TaskExec.States
QUEUE_TABLES = (TaskExec, WorkerStatus, ScheduleExec)
TABLE_NAMES = tuple(model._meta.db_table for model in QUEUE_TABLES)
HAS_POSTGRES_QUEUE = "pg_queue" in settings.DATABASES
# Django checks the aliases of skipped classes too: without "pg_queue" theirs are skipped, and only name default.
POSTGRES_QUEUE_DATABASES = {"default", "pg_queue"} & settings.DATABASES.keys()


class Routed(IsolatedRegistries):
    """A test case mixin: the queue's tables on ``router.database``, by ``router``."""

    router = routers.QueueRouter
    # The variable that names that database to a worker subprocess (tests/settings.py).
    database_name_variable = "TOOSIMPLEQ_TEST_QUEUE_DB_NAME"

    def setUp(self):
        super().setUp()
        self.enterContext(override_settings(DATABASE_ROUTERS=[f"tests.routers.{self.router.__name__}"]))
        self.alias = self.router.database

    def tearDown(self):
        for model in QUEUE_TABLES:
            self.assertFalse(model.objects.using(DEFAULT_DB_ALIAS).exists(), f"{model.__name__} rows on default")
        super().tearDown()

    def on_queue(self, model):
        return model.objects.using(self.alias)

    def routed_env(self, **extra):
        """The environment of a worker subprocess with the same routing, on these test databases."""
        name = connections[self.alias].settings_dict["NAME"]
        return {"TOOSIMPLEQ_TEST_ROUTER": self.router.__name__, self.database_name_variable: name, **extra}


class RoutedQueueTests(Routed, TransactionTestCase):
    """The whole lifecycle, the application on "default" and the queue on "queue"."""

    databases = {"default", "queue"}

    def test_the_queue_database_is_the_routers(self):
        self.assertEqual(queue_database(), self.alias)
        with override_settings(DATABASE_ROUTERS=[]):
            self.assertEqual(queue_database(), "default")

    def test_an_in_process_worker_runs_the_tasks_queued_on_the_queue_database(self):
        executions = [tasks.add.queue(i, 1) for i in range(3)]
        tasks.record.queue("app data")
        self.assertEqual(self.on_queue(TaskExec).count(), 4)
        self.assertEqual(Worker(threads=2, until_done=True).run(), 0)
        self.assertEqual([TaskExec.objects.get(pk=e.pk).result for e in executions], [1, 2, 3])
        self.assertEqual(self.on_queue(TaskExec).filter(state=States.SUCCEEDED).count(), 4)
        self.assertEqual(self.on_queue(WorkerStatus).get().exit_code, 0)
        # The task's own writes follow the routers too: the application's table is on default.
        self.assertTrue(Execution.objects.using("default").filter(key="app data").exists())

    def test_a_failed_task_is_retried_on_the_queue_database(self):
        failed = tasks.flaky.queue("flaky-key")
        Worker(until_done=True).run()
        chain = self.on_queue(TaskExec).order_by("id")
        self.assertEqual([row.state for row in chain], [States.FAILED, States.SUCCEEDED])
        self.assertEqual(chain[0].pk, failed.pk)

    @contextlib.contextmanager
    def transactions_seen_by(self, owner, method):
        """Whether the queue's database was in a transaction at each call of ``owner.method``."""
        seen = []
        original = getattr(owner, method)

        def recording(*args, **kwargs):
            seen.append(connections[self.alias].in_atomic_block)
            return original(*args, **kwargs)

        with mock.patch.object(owner, method, recording):
            yield seen

    def test_a_retry_is_stored_in_one_transaction_with_the_failure(self):
        tasks.flaky.queue("retried-key")
        with self.transactions_seen_by(store, "requeue") as seen:
            Worker(until_done=True).run()
        self.assertEqual(seen, [True])

    def test_a_reaped_task_is_queued_again_in_one_transaction_with_its_interruption(self):
        dead = WorkerStatus.objects.create(
            label="dead", hostname="h", pid=0, last_tick=timezone.now() - datetime.timedelta(hours=1)
        )
        orphan = TaskExec.objects.create(task_name="tests.add", args=[1], state=States.PROCESSING, worker=dead)
        with self.transactions_seen_by(store, "requeue") as seen:
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
        self.assertEqual(self.on_queue(ScheduleExec).get(name="routing.add").last_task, queued)

    def test_a_worker_command_runs_tasks_and_schedules_on_the_queue_database(self):
        execution = tasks.add.queue(2, 3)
        finished = run_worker(
            "--until_done", "--queue", "default", "--queue", "at_start_a",
            env=self.routed_env(TOOSIMPLEQ_TEST_SCHEDULE_APP=1),
        )
        self.assertEqual(finished.returncode, 0, finished.stderr)
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).result, 5)
        schedule = self.on_queue(ScheduleExec).get(name="scheduleapp.at_start_a")
        self.assertEqual(schedule.last_task.state, States.SUCCEEDED)
        self.assertEqual(schedule.last_task.result, "a")

    def test_the_listener_of_a_worker_command_hears_the_queue_database(self):
        if connections[self.alias].vendor != "postgresql":
            self.skipTest("NOTIFY")
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


@skipUnless(HAS_POSTGRES_QUEUE, "no PostgreSQL beside SQLite (tests/run.py starts one when it is installed)")
class PostgresQueueOfAnSqliteApplicationTests(RoutedQueueTests):
    """The same lifecycle, the application on SQLite and the queue on PostgreSQL."""

    databases = POSTGRES_QUEUE_DATABASES
    router = routers.PostgresQueueRouter
    database_name_variable = "TOOSIMPLEQ_TEST_PG_QUEUE_DB_NAME"

    def test_the_application_is_on_sqlite_and_the_queue_on_postgresql(self):
        self.assertEqual((connections["default"].vendor, connections[self.alias].vendor), ("sqlite", "postgresql"))


class StrayStatements:
    """What the package does outside the queue's database, on any thread, while it is recorded.

    ``statements``: the SQL that names a queue table on another database;
    ``transactions``: the atomic blocks the package opens on another database
    (the queue's statements would run outside them, each on its own).
    """

    def __init__(self, queue_alias):
        self.queue_alias = queue_alias
        self.statements = []
        self.transactions = []

    @contextlib.contextmanager
    def recording(self):
        execute_with_wrappers = CursorWrapper._execute_with_wrappers
        enter_atomic = transaction.Atomic.__enter__
        recorder = self

        def execute(cursor, sql, *args, **kwargs):
            if cursor.db.alias != recorder.queue_alias and any(table in sql for table in TABLE_NAMES):
                recorder.statements.append((cursor.db.alias, sql))
            return execute_with_wrappers(cursor, sql, *args, **kwargs)

        def enter(atomic):
            caller = sys._getframe(1)
            alias = atomic.using or DEFAULT_DB_ALIAS
            if caller.f_globals["__name__"].startswith("django_toosimple_q") and alias != recorder.queue_alias:
                recorder.transactions.append((alias, f"{caller.f_code.co_filename}:{caller.f_lineno}"))
            return enter_atomic(atomic)

        with mock.patch.object(CursorWrapper, "_execute_with_wrappers", execute):
            with mock.patch.object(transaction.Atomic, "__enter__", enter):
                yield self


class RoutingAudit:
    """A test case mixin: each surface of the package, run with the queue routed, stays on the queue's database."""

    @contextlib.contextmanager
    def only_the_queue_database(self):
        with StrayStatements(self.alias).recording() as stray:
            yield
        self.assertEqual(stray.statements, [], "statements on the queue's tables, on another database")
        self.assertEqual(stray.transactions, [], "transactions of the package on another database")


@override_settings(
    EMAIL_BACKEND="django_toosimple_q.contrib.mail.backend.QueueBackend",
    TOOSIMPLEQ_EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
    TOOSIMPLEQ_METRICS_TOKEN="secret",
)
class RoutingAuditTests(RoutingAudit, Routed, TransactionTestCase):
    """Every surface of the package, the queue on "queue"."""

    databases = {"default", "queue"}

    def finished_history(self):
        """A few finished, failed and waiting executions, and a worker that served them."""
        long_ago = timezone.now() - datetime.timedelta(days=30)
        worker = self.on_queue(WorkerStatus).create(label="old", hostname="h", pid=1, last_tick=long_ago, stopped=long_ago)
        for state in (States.SUCCEEDED, States.FAILED, States.QUEUED):
            self.on_queue(TaskExec).create(
                task_name="tests.add", args=[1], state=state, worker=worker, created=long_ago,
                finished=None if state == States.QUEUED else long_ago,
            )

    def test_the_admin_lists_pages_and_actions(self):
        task = register(Task(tasks.add, name="routing.add"))
        register_schedule(Schedule(task, "0 8 * * *", name="routing.add", args=[1]))
        Scheduler(QueueFilter()).sync()
        self.finished_history()
        self.client.force_login(User.objects.create_superuser("admin", password="pw"))
        executions = list(self.on_queue(TaskExec).values_list("pk", flat=True))
        with self.only_the_queue_database():
            for model in ("taskexec", "workerstatus", "scheduleexec", "queueoverview"):
                self.assertContains(self.client.get(reverse(f"admin:toosimpleq_{model}_changelist")), "toosimpleq")
            self.assertEqual(self.client.get(reverse("admin:toosimpleq_taskexec_change", args=[executions[0]])).status_code, 200)
            changelist = reverse("admin:toosimpleq_taskexec_changelist")
            for action in ("action_requeue", "action_cancel"):
                self.client.post(changelist, {"action": action, "_selected_action": executions})
            self.client.post(
                reverse("admin:toosimpleq_scheduleexec_changelist"),
                {"action": "action_force_run", "_selected_action": list(self.on_queue(ScheduleExec).values_list("pk", flat=True))},
            )
        self.assertEqual(self.on_queue(TaskExec).filter(state=States.CANCELLED).count(), 1)
        self.assertEqual(self.on_queue(TaskExec).filter(pk__gt=max(executions), task_name="tests.add").count(), 3)
        self.assertTrue(self.on_queue(TaskExec).filter(task_name="routing.add", state=States.QUEUED).exists())

    def test_the_management_commands(self):
        tasks.add.queue(1, 2)
        self.finished_history()
        output = io.StringIO()
        with self.only_the_queue_database():
            call_command("worker", "--until_done", stdout=output, stderr=output)
            call_command("queue_stats", stdout=output)
            call_command("queue_health", "--max-backlog", "10", stdout=output)
            call_command("prune_tasks", "--older-than", "1d", stdout=output)
        self.assertEqual(self.on_queue(TaskExec).filter(created__lt=timezone.now() - datetime.timedelta(days=1)).count(), 1)
        self.assertFalse(self.on_queue(WorkerStatus).filter(label="old").exists())

    def test_retention_statistics_and_metrics(self):
        self.finished_history()
        with self.only_the_queue_database(), override_settings(TOOSIMPLEQ_RETENTION={"SUCCEEDED": "1d", "FAILED": "1d"}):
            self.assertEqual(stats.collect().queues_named(["default"])[0].counts[States.QUEUED], 1)
            metrics = self.client.get("/metrics/", headers={"Authorization": "Bearer secret"})
            self.assertContains(metrics, 'toosimpleq_executions{queue="default",state="QUEUED"} 1.0')
            retention.apply_retention()
        self.assertEqual(list(self.on_queue(TaskExec).values_list("state", flat=True)), [States.QUEUED])

    def test_the_django_tasks_backend_and_the_testing_helpers(self):
        with self.only_the_queue_database():
            result = framework_tasks.add.enqueue(2, 3)
            self.assertEqual([execution.pk for execution in testing.queued()], [int(result.id)])
            testing.run_queued()
            self.assertEqual(framework_tasks.add.get_result(result.id).return_value, 5)
            with testing.immediate():
                self.assertEqual(tasks.add.queue(4, 4).result, 8)

    def test_contrib_mail(self):
        with self.only_the_queue_database():
            self.assertEqual(mail.send_mail("Hello", "Body", "from@example.com", ["to@example.com"]), 1)
            Worker(until_done=True, schedules=False).run()
        self.assertEqual([message.subject for message in mail.outbox], ["Hello"])

    def test_the_embedded_worker(self):
        execution = tasks.add.queue(5, 5)
        with self.only_the_queue_database():
            embedded.start()
            try:
                wait_for(lambda: self.on_queue(TaskExec).get(pk=execution.pk).state == States.SUCCEEDED)
            finally:
                embedded.stop()
        self.assertEqual(self.on_queue(TaskExec).get(pk=execution.pk).result, 10)


@skipUnless(HAS_POSTGRES_QUEUE, "no PostgreSQL beside SQLite (tests/run.py starts one when it is installed)")
class PostgresQueueRoutingAuditTests(RoutingAuditTests):
    """Every surface of the package, the application on SQLite and the queue on PostgreSQL."""

    databases = POSTGRES_QUEUE_DATABASES
    router = routers.PostgresQueueRouter


class InTheCallersTransactionTests(RoutingAudit, Routed, TestCase):
    """The worker of the testing helpers, inside a TestCase's transaction, on the queue's database."""

    databases = {"default", "queue"}

    def test_the_tasks_run_in_the_callers_transaction_on_the_queue_database(self):
        executions = [tasks.add.queue(i, 1) for i in range(2)] + [tasks.flaky.queue("in-transaction")]
        with self.only_the_queue_database():
            ran = testing.run_queued()
        self.assertEqual([execution.result for execution in ran[:2]], [1, 2])
        self.assertEqual(self.on_queue(TaskExec).get(pk=executions[2].pk).replaced_by.state, States.SUCCEEDED)


@skipUnless(HAS_POSTGRES_QUEUE, "no PostgreSQL beside SQLite (tests/run.py starts one when it is installed)")
class PostgresQueueInTheCallersTransactionTests(InTheCallersTransactionTests):
    databases = POSTGRES_QUEUE_DATABASES
    router = routers.PostgresQueueRouter
