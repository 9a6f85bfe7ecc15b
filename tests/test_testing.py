"""Testing tasks: the worker inside a caller's transaction, and the immediate mode."""

import datetime
import io
import logging
import threading

from django.core.management import call_command
from django.db import connection
from django.test import TestCase, TransactionTestCase
from django.utils import timezone

import time_machine
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.registry import Schedule, schedules_registry

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
        self.assertEqual(reload(added).return_value, 3)
        self.assertEqual(reload(recorded).state, States.SUCCEEDED)
        self.assertTrue(Execution.objects.filter(key="in a test").exists())
        self.assertEqual(reload(failed).state, States.FAILED)
        self.assertIn("ValueError: no", reload(failed).error)
        self.assertEqual(WorkerStatus.objects.get().exit_code, 0)

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
        self.assertEqual(first.replaced_by.return_value, "second run")

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
        schedule = Schedule(tasks.echo, "* * * * *", name="tests.every minute", args=["tick"], last_run=None)
        schedules_registry[schedule.name] = schedule
        self.addCleanup(schedules_registry.pop, schedule.name)

        call_command("worker", "--until_done")

        execution = TaskExec.objects.get(task_name="tests.echo")
        self.assertEqual((execution.state, execution.return_value), (States.SUCCEEDED, "tick"))


class WorkerOutsideTransactionTests(TransactionTestCase):
    def test_the_worker_runs_its_tasks_on_a_pool_thread(self):
        threads = []
        tasks.add.queue(1)
        original = tasks.add.func
        self.addCleanup(setattr, tasks.add, "func", original)
        tasks.add.func = lambda *args: threads.append(threading.current_thread().name) or original(*args)

        log = call_worker("--until_done")

        self.assertNotIn("inside a transaction", log)
        self.assertEqual(len(threads), 1)
        self.assertNotEqual(threads[0], threading.current_thread().name)
        self.assertTrue(connection.get_autocommit())
