"""The lifecycle signals, and the keys lifecycle log lines carry."""

import logging
import threading
from unittest import skipUnless

from django.db import connection, transaction
from django.test import TransactionTestCase

from django_toosimple_q import signals
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker

from .testapp import tasks

States = TaskExec.States
EXTRA_KEYS = ("execution_id", "task_name", "queue", "attempt", "duration", "worker")


def run_worker():
    worker = Worker(until_done=True, schedules=False)
    worker.run()
    return worker


class Received:
    """A receiver connected to ``signal`` for the test: what it was sent, and in which thread."""

    def __init__(self, test, signal, raises=False):
        self.calls = []

        def receiver(sender, **kwargs):
            self.calls.append({"sender": sender, "thread": threading.current_thread().name, **kwargs})
            if raises:
                raise RuntimeError("a receiver's bug")

        signal.connect(receiver, weak=False)
        test.addCleanup(signal.disconnect, receiver)


class TaskSignalTests(TransactionTestCase):
    def test_task_queued_is_sent_once_committed_and_never_for_a_rollback(self):
        queued = Received(self, signals.task_queued)
        with transaction.atomic():
            kept = tasks.add.queue(1, b=2)
            self.assertEqual(queued.calls, [])
        try:
            with transaction.atomic():
                tasks.add.queue(3, b=4)
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        self.assertEqual([call["execution"] for call in queued.calls], [kept])
        self.assertIs(queued.calls[0]["sender"], TaskExec)

    def test_a_refused_duplicate_is_not_queued(self):
        queued = Received(self, signals.task_queued)
        tasks.unique.queue(1)
        self.assertIs(tasks.unique.queue(1), False)
        self.assertEqual(len(queued.calls), 1)

    def test_started_and_finished_with_the_outcome_in_the_worker_thread(self):
        started, finished = Received(self, signals.task_started), Received(self, signals.task_finished)
        execution = tasks.add.queue(1, b=2)
        worker = run_worker()
        self.assertEqual([call["execution"].id for call in started.calls], [execution.pk])
        (call,) = finished.calls
        self.assertEqual((call["outcome"]["state"], call["outcome"]["result"]), (States.SUCCEEDED, 3))
        self.assertEqual((call["execution"].id, call["worker_id"]), (execution.pk, worker.status.pk))
        # From a thread of the worker: on SQLite its announcer, which the loop
        # (run in this thread) hands the outcomes it stored to; else one of its pool's.
        stored_by = (threading.current_thread().name, f"toosimpleq-{worker.label}")
        self.assertTrue(call["thread"].startswith(stored_by), call["thread"])

    def test_a_slow_receiver_of_task_finished_does_not_hold_up_the_next_tasks(self):
        first = tasks.add.queue(1, b=2)
        entered, released, waited = threading.Event(), threading.Event(), []

        def slow(sender, execution, **kwargs):
            # Returns once the next task has started: never, if it waits for this receiver.
            if execution.id == first.pk:
                entered.set()
                waited.append(released.wait(timeout=10))

        def started(sender, execution, **kwargs):
            if execution.id != first.pk:
                released.set()

        for signal, receiver in ((signals.task_finished, slow), (signals.task_started, started)):
            signal.connect(receiver, weak=False)
            self.addCleanup(signal.disconnect, receiver)
        worker = Worker(threads=2, schedules=False)
        worker.start()
        self.assertTrue(entered.wait(timeout=30))
        tasks.add.queue(3, b=4)
        self.assertTrue(released.wait(timeout=30))
        worker.stop()
        self.assertEqual(worker.join(timeout=30), 0)
        self.assertEqual(waited, [True])
        self.assertEqual(TaskExec.objects.filter(state=States.SUCCEEDED).count(), 2)

    @skipUnless(connection.vendor == "sqlite", "SQLite: the worker's loop stores the outcomes and has an announcer")
    def test_a_stopping_worker_waits_for_a_stuck_receiver_no_longer_than_its_grace(self):
        entered, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)

        def stuck(sender, **kwargs):
            entered.set()
            release.wait(timeout=60)

        signals.task_finished.connect(stuck, weak=False)
        self.addCleanup(signals.task_finished.disconnect, stuck)
        tasks.add.queue(1, b=2)
        worker = Worker(threads=1, schedules=False)
        worker.start()
        self.assertTrue(entered.wait(timeout=30))
        with self.assertLogs("django_toosimple_q", logging.WARNING) as logs:
            worker.stop(grace=0)
            self.assertEqual(worker.join(timeout=30), 0)
        self.assertIn("a receiver of task_finished still runs at the end of the grace period", logs.output[-1])
        self.assertEqual(TaskExec.objects.get().state, States.SUCCEEDED)

    @skipUnless(connection.vendor == "sqlite", "SQLite: the worker's loop stores the outcomes and has an announcer")
    def test_a_connection_a_receiver_left_unfit_is_not_kept_for_the_next_outcomes(self):
        autocommit, called = [], threading.Event()

        def leaves_a_transaction_open(sender, **kwargs):
            autocommit.append(connection.get_autocommit())
            connection.set_autocommit(False)
            called.set()

        signals.task_finished.connect(leaves_a_transaction_open, weak=False)
        self.addCleanup(signals.task_finished.disconnect, leaves_a_transaction_open)
        worker = Worker(threads=1, schedules=False)
        worker.start()
        for b in (2, 3):
            called.clear()
            tasks.add.queue(1, b=b)
            self.assertTrue(called.wait(timeout=30))
        worker.stop()
        self.assertEqual(worker.join(timeout=30), 0)
        self.assertEqual(autocommit, [True, True])

    def test_retried_with_the_retry(self):
        retried = Received(self, signals.task_retried)
        execution = tasks.flaky.queue("signals-retried")
        run_worker()
        (call,) = retried.calls
        self.assertEqual(call["execution"].id, execution.pk)
        self.assertEqual(call["retry"], TaskExec.objects.get(pk=execution.pk).replaced_by)

    def test_a_receiver_that_raises_is_logged_and_changes_no_outcome(self):
        failing = [Received(self, signal, raises=True) for signal in (signals.task_started, signals.task_finished)]
        after = Received(self, signals.task_finished)
        execution = tasks.add.queue(1, b=2)
        # Logged once each, by Django, with the traceback.
        with self.assertLogs("django.dispatch", logging.ERROR) as logs, self.assertNoLogs("django_toosimple_q", logging.ERROR):
            run_worker()
        self.assertEqual([len(receiver.calls) for receiver in failing], [1, 1])
        self.assertEqual(len(after.calls), 1)
        self.assertEqual([record.exc_info[1].args for record in logs.records], [("a receiver's bug",)] * 2)
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((stored.state, stored.result), (States.SUCCEEDED, 3))


class WorkerSignalTests(TransactionTestCase):
    def test_worker_started_and_stopped(self):
        started, stopped = Received(self, signals.worker_started), Received(self, signals.worker_stopped)
        worker = run_worker()
        self.assertEqual([call["status"].pk for call in started.calls], [worker.status.pk])
        (call,) = stopped.calls
        self.assertEqual((call["status"].pk, call["status"].exit_code), (worker.status.pk, 0))
        self.assertIs(call["sender"], WorkerStatus)


class LogExtraTests(TransactionTestCase):
    def test_the_lines_of_a_run_carry_the_same_keys(self):
        execution = tasks.configured.queue("x")
        with self.assertLogs("django_toosimple_q", logging.DEBUG) as logs:
            worker = run_worker()
        lines = [record for record in logs.records if getattr(record, "execution_id", None) == execution.pk]
        self.assertEqual([record.levelname for record in lines], ["DEBUG", "DEBUG"])
        running, finished = lines
        for record in lines:
            self.assertEqual(
                (record.task_name, record.queue, record.attempt, record.worker),
                ("tests.configured", "reports", 1, worker.status.pk),
            )
        self.assertIsNone(running.duration)
        self.assertGreaterEqual(finished.duration, 0)
        self.assertIn("SUCCEEDED", finished.getMessage())
