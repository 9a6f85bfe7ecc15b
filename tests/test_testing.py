"""Testing tasks: the worker inside a caller's transaction, and the immediate mode."""

import datetime
import io
import logging
import threading
from unittest import skipUnless

from django.core.management import call_command
from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings
from django.utils import timezone

import time_machine
from django_toosimple_q import testing
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import Schedule, schedules_registry
from django_toosimple_q.worker import Worker

from .testapp import tasks
from .testapp.models import Execution

States = TaskExec.States


def call_worker(*args):
    """``manage.py worker ARGS`` in this thread; returns what it logged."""
    logs = io.StringIO()
    handler = logging.StreamHandler(logs)
    logger = logging.getLogger("django_toosimple_q")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        call_command("worker", "--no_schedules", *args)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return logs.getvalue()


def reload(execution):
    return TaskExec.objects.get(pk=execution.pk)


class WorkerInTransactionTests(TestCase):
    """``call_command("worker", ...)`` in a TestCase: the caller's transaction."""

    def test_until_done_runs_every_task_on_the_calling_thread(self):
        added = tasks.add.queue(1, 2)
        recorded = tasks.record.queue("in a test")
        failed = tasks.fail.queue("no")

        log = call_worker("--until_done")

        self.assertIn("inside a transaction", log)
        self.assertEqual(reload(added).state, States.SUCCEEDED)
        self.assertEqual(reload(added).result, 3)
        self.assertEqual(reload(recorded).state, States.SUCCEEDED)
        self.assertTrue(Execution.objects.filter(key="in a test").exists())
        self.assertEqual(reload(failed).state, States.FAILED)
        self.assertIn("ValueError: no", reload(failed).error)
        self.assertEqual(WorkerStatus.objects.get().exit_code, 0)

    def test_without_flags_it_stops_when_nothing_is_left(self):
        added = tasks.add.queue(4)

        call_worker()

        self.assertEqual(reload(added).state, States.SUCCEEDED)

    def test_a_database_error_in_a_task_leaves_the_transaction_usable(self):
        tasks.record.queue("twice")
        second = tasks.record.queue("twice")  # its insert breaks the unique key
        third = tasks.echo.queue("after")

        call_worker("--until_done")

        self.assertEqual(reload(second).state, States.FAILED)
        self.assertIn("Error", reload(second).error)
        self.assertEqual(reload(third).state, States.SUCCEEDED)
        self.assertEqual(Execution.objects.filter(key="twice").count(), 1)

    def test_once_and_max_tasks_stop_after_their_count(self):
        first, second, third = [tasks.echo.queue(number) for number in range(3)]

        call_worker("--once")
        self.assertEqual([reload(e).state for e in (first, second, third)], [States.SUCCEEDED, States.QUEUED, States.QUEUED])

        call_worker("--max_tasks", "1")
        self.assertEqual([reload(e).state for e in (second, third)], [States.SUCCEEDED, States.QUEUED])

    def test_retries_run_until_they_are_used_up(self):
        flaky = tasks.flaky.queue("once")

        call_worker("--until_done")

        first = reload(flaky)
        self.assertEqual(first.state, States.FAILED)
        self.assertEqual(first.replaced_by.state, States.SUCCEEDED)
        self.assertEqual(first.replaced_by.result, "second run")

    def test_a_delayed_retry_waits_for_its_time(self):
        with time_machine.travel(timezone.now(), tick=False) as clock:
            retried = tasks.retried.queue()
            call_worker("--until_done")
            retry = reload(retried).replaced_by
            self.assertEqual(retry.state, States.SLEEPING)

            clock.shift(datetime.timedelta(seconds=11))
            call_worker("--until_done")
            self.assertEqual(reload(retry).state, States.FAILED)

    def test_schedules_are_queued_and_run(self):
        schedule = Schedule(tasks.echo._task, "* * * * *", name="tests.every minute", args=["tick"], last_run=None)
        schedules_registry[schedule.name] = schedule
        self.addCleanup(schedules_registry.pop, schedule.name)

        call_command("worker", "--until_done")

        execution = TaskExec.objects.get(task_name="tests.echo")
        self.assertEqual((execution.state, execution.result), (States.SUCCEEDED, "tick"))


class WorkerOutsideTransactionTests(TransactionTestCase):
    @skipUnless(connection.vendor == "sqlite", "SQLite refuses a BEGIN inside a transaction")
    def test_a_transaction_it_cannot_begin_stops_the_worker(self):
        tasks.add.queue(1)
        # A transaction Django does not know of: the claim's BEGIN IMMEDIATE fails at every try.
        connection.ensure_connection()
        connection.connection.execute("BEGIN")  # undone when the worker closes its connections

        worker = Worker(until_done=True, schedules=False)

        self.assertEqual(worker.run(), WorkerStatus.ExitCodes.CRASHED)

    def test_the_worker_runs_its_tasks_on_a_pool_thread(self):
        threads = []
        tasks.add.queue(1)
        task = tasks.add._task
        original = task.func
        self.addCleanup(setattr, task, "func", original)
        task.func = lambda *args: threads.append(threading.current_thread().name) or original(*args)

        log = call_worker("--until_done")

        self.assertNotIn("inside a transaction", log)
        self.assertEqual(len(threads), 1)
        self.assertNotEqual(threads[0], threading.current_thread().name)
        self.assertTrue(connection.get_autocommit())


class ImmediateModeTests(TestCase):
    """``queue()`` under ``testing.immediate()``: the task runs at once, its outcome stored."""

    def test_queue_runs_the_task_and_stores_its_outcome(self):
        with testing.immediate():
            said = tasks.say.queue("hello")
            failed = tasks.fail.queue("no")

        self.assertEqual((said.state, said.result, said.stdout), (States.SUCCEEDED, 5, "hello\n"))
        self.assertEqual(reload(said).state, States.SUCCEEDED)
        self.assertIsNotNone(said.finished)
        self.assertEqual(failed.state, States.FAILED)
        self.assertIn("ValueError: no", failed.error)

    def test_the_setting_does_the_same(self):
        with override_settings(TOOSIMPLEQ_IMMEDIATE=True):
            added = tasks.add.queue(2, 3)
        self.assertEqual((added.state, added.result), (States.SUCCEEDED, 5))

    def test_a_retry_is_queued_with_the_call_as_it_was_queued(self):
        with testing.immediate():
            first = tasks.changes_its_arguments.queue("immediate", [1], {"a": 2})
        self.assertEqual(first.replaced_by.args, ["immediate", [1], {"a": 2}])
        self.assertEqual(first.replaced_by.result, [[1], {"a": 2}])

    def test_retries_without_delay_run_at_once_and_delayed_ones_wait(self):
        with testing.immediate():
            flaky = tasks.flaky.queue("immediate")
            retried = tasks.retried.queue()

        self.assertEqual(flaky.state, States.FAILED)
        self.assertEqual(flaky.replaced_by.state, States.SUCCEEDED)
        self.assertEqual(retried.state, States.FAILED)
        self.assertEqual(retried.replaced_by.state, States.SLEEPING)

    def test_a_task_due_later_is_stored_not_run(self):
        later = timezone.now() + datetime.timedelta(hours=1)
        with testing.immediate():
            sleeping = tasks.unique.queue("later", due=later)
            again = tasks.unique.queue("later", due=later)

        self.assertEqual(sleeping.state, States.SLEEPING)
        self.assertIs(again, False)  # unique: the same call waits
        self.assertEqual(list(testing.queued(tasks.unique)), [sleeping])

    def test_queue_many_and_options_are_kept(self):
        with testing.immediate():
            executions = tasks.add.queue_many([(1, 2), (3, 4)])
            configured = tasks.configured.using(queue="elsewhere", priority=9).queue("x")

        self.assertEqual([(e.state, e.result) for e in executions], [(States.SUCCEEDED, 3), (States.SUCCEEDED, 7)])
        self.assertEqual((configured.state, configured.queue, configured.priority), (States.SUCCEEDED, "elsewhere", 9))

    def test_tasks_queued_before_are_left_waiting(self):
        waiting = tasks.echo.queue("before")
        with testing.immediate():
            tasks.echo.queue("during")
        self.assertEqual(reload(waiting).state, States.QUEUED)


class RunQueuedTests(TestCase):
    def test_run_queued_runs_what_waits_in_claim_order(self):
        low = tasks.echo.queue("low")
        high = tasks.configured.queue("high")  # priority 5
        later = tasks.echo.using(due=timezone.now() + datetime.timedelta(hours=1)).queue("later")

        self.assertEqual(list(testing.queued()), [low, high, later])
        self.assertEqual(list(testing.queued("tests.echo")), [low, later])

        ran = testing.run_queued()

        self.assertEqual([execution.pk for execution in ran], [high.pk, low.pk])
        self.assertEqual([execution.state for execution in ran], [States.SUCCEEDED, States.SUCCEEDED])
        self.assertEqual(list(testing.queued()), [later])

    def test_run_queued_returns_them_in_the_order_they_ran_under_a_frozen_clock(self):
        with time_machine.travel(timezone.now(), tick=False):
            low = tasks.echo.queue("low")
            high = tasks.configured.queue("high")

            ran = testing.run_queued()

        self.assertEqual([execution.pk for execution in ran], [high.pk, low.pk])

    def test_run_queued_serves_the_queues_asked(self):
        tasks.configured.queue("reports")  # queue "reports"
        other = tasks.echo.queue("default")

        ran = testing.run_queued(queues=["reports"])

        self.assertEqual([execution.task_name for execution in ran], ["tests.configured"])
        self.assertEqual(reload(other).state, States.QUEUED)
