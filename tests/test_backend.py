"""Django's task framework on our worker: the tasks of one module run on
Django's ImmediateBackend and on ours, and their TaskResults compared.

Django 6.x has ``django.tasks``; Django 5.2 runs these tests with the
``django-tasks`` backport, and skips them without it. Django 6.0's ``@task``
takes none of our options: the tests of ``@task(retries=...)`` are skipped
there (make test-django60).
"""

import dataclasses
import datetime
import inspect
import os
import signal
import sys
import tempfile
import threading
import unittest
from unittest import mock

from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

try:
    from django_toosimple_q import backend
except ImportError:
    raise unittest.SkipTest("neither django.tasks nor the django-tasks backport is installed") from None

import time_machine

from django_toosimple_q.decorators import schedule
from django_toosimple_q.models import ScheduleExec, TaskExec
from django_toosimple_q.registry import schedules_registry
from django_toosimple_q import worker as worker_package
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler

from django_toosimple_q.decorators import register_task

from .helpers import IsolatedRegistries, start_worker, wait_for
from .testapp import framework_tasks as tasks
from .testapp import tasks as native_tasks
from .testapp.models import Execution

try:
    from django.tasks import task
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
except ImportError:  # Django 5.2: the backport
    from django_tasks import task
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued

# Django 6.1 and the backport pass @task's other keyword arguments to the backend's task class; 6.0 refuses them.
TASK_TAKES_OPTIONS = any(parameter.kind is parameter.VAR_KEYWORD for parameter in inspect.signature(task).parameters.values())
if TASK_TAKES_OPTIONS:
    from .testapp import framework_options

Status = backend.TaskResultStatus
States = TaskExec.States
TIMEOUT_CLASS = "django_toosimple_q.worker.timeouts.TaskTimeout"


def drain(threads=1):
    """Run every waiting task in a worker of this process."""
    Worker(threads=threads, until_done=True, schedules=False).run()


def immediately(task):
    return task.using(backend="immediate")


def in_another_thread(function):
    """``function()`` run on a thread of its own, so on a connection of its own; its value or its exception."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except Exception as error:  # handed to the test's thread
            outcome["error"] = error
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class ComparedTestCase(TransactionTestCase):
    def run_on_both(self, task, *args, **kwargs):
        """``task(*args, **kwargs)`` on Django's ImmediateBackend, and on ours through a worker."""
        expected = immediately(task).enqueue(*args, **kwargs)
        ours = task.enqueue(*args, **kwargs)
        self.assertEqual(ours.status, Status.READY)
        drain()
        return expected, task.get_result(ours.id)

    def assert_same_result(self, expected, ours):
        """What a caller reads of a result is the same, but for the ids, the backend and the times."""
        self.assertEqual(ours.status, expected.status)
        self.assertEqual((ours.args, ours.kwargs), (expected.args, expected.kwargs))
        self.assertEqual(ours.is_finished, expected.is_finished)
        self.assertEqual(ours.attempts, expected.attempts)
        self.assertEqual(
            [error.exception_class_path for error in ours.errors],
            [error.exception_class_path for error in expected.errors],
        )
        self.assertEqual(ours.task, expected.task.using(backend="default"))
        self.assertEqual(ours.backend, "default")
        if expected.status == Status.SUCCESSFUL:
            self.assertEqual(ours.return_value, expected.return_value)
        else:
            with self.assertRaisesMessage(ValueError, "Task failed"):
                ours.return_value
        self.assertLessEqual(ours.enqueued_at, ours.started_at)
        self.assertLessEqual(ours.started_at, ours.last_attempted_at)
        self.assertLessEqual(ours.last_attempted_at, ours.finished_at)


class BackendTests(TransactionTestCase):
    def test_what_it_supports(self):
        ours = backend.TaskBackend("default", {})
        flags = (ours.supports_defer, ours.supports_priority, ours.supports_get_result, ours.supports_async_task)
        self.assertEqual(flags, (True, True, True, True))

    def test_backends_are_built_and_tasks_validated_without_the_database(self):
        with self.assertNumQueries(0):
            ours = backend.TaskBackend("default", {"QUEUES": []})
            ours.validate_task(tasks.add.using(priority=100, queue_name="any", run_after=timezone.now()))
            ours.validate_task(tasks.describe)

    def test_queues_are_validated(self):
        ours = backend.TaskBackend("default", {"QUEUES": ["reports"]})
        ours.validate_task(tasks.add.using(queue_name="reports"))
        with self.assertRaisesMessage(InvalidTask, "Queue 'default' is not valid for backend."):
            ours.validate_task(tasks.add)

    def test_our_options_are_validated(self):
        refused = {
            "retries": (-2, "retries must be an integer >= -1, not -2"),
            "retry_delay": (-1, "retry_delay must be a number of seconds from 0 to 31536000"),
            "timeout": (0, "timeout must be None or a number > 0, not 0"),
        }
        for option, (value, message) in refused.items():
            with self.subTest(option), self.assertRaisesMessage(InvalidTask, message):
                dataclasses.replace(tasks.add, **{option: value})

    def test_check_asks_for_the_app(self):
        ours = backend.TaskBackend("default", {})
        self.assertEqual(ours.check(), [])
        with override_settings(INSTALLED_APPS=["django.contrib.contenttypes"]):
            (error,) = ours.check()
        self.assertEqual(error.id, "toosimpleq.E007")
        self.assertIn("needs django_toosimple_q in INSTALLED_APPS", error.msg)


class EnqueueTests(ComparedTestCase):
    def test_a_call_is_one_row_of_the_queue(self):
        result = tasks.add.using(priority=7, queue_name="reports").enqueue(1, b=2)
        execution = TaskExec.objects.get()
        self.assertEqual(result.id, str(execution.pk))
        self.assertEqual(
            (execution.task_name, execution.args, execution.kwargs, execution.queue, execution.priority),
            ("tests.testapp.framework_tasks.add", [1], {"b": 2}, "reports", 7),
        )
        self.assertEqual((execution.state, execution.backend, execution.run_after), (States.QUEUED, "default", None))
        self.assertEqual(result.enqueued_at, execution.created)

    def test_sync_task(self):
        self.assert_same_result(*self.run_on_both(tasks.add, 1, b=2))

    def test_async_task(self):
        self.assert_same_result(*self.run_on_both(tasks.async_add, 1, b=2))

    def test_async_tasks_run_on_the_worker_thread_itself(self):
        # Where the output capture and the timeouts see them.
        result = tasks.async_thread_name.enqueue()
        drain()
        self.assertTrue(tasks.async_thread_name.get_result(result.id).return_value.startswith("toosimpleq-"))

    def test_using_priority_and_queue(self):
        expected, ours = self.run_on_both(tasks.add.using(priority=-100, queue_name="reports"), 3)
        self.assert_same_result(expected, ours)
        self.assertEqual((ours.task.priority, ours.task.queue_name), (-100, "reports"))

    def test_aenqueue_and_aget_result(self):
        result = async_to_sync(tasks.add.aenqueue)(2, 3)
        drain()
        self.assertEqual(async_to_sync(tasks.add.aget_result)(result.id).return_value, 5)

    def test_arguments_are_what_django_accepts(self):
        # Tuples become lists, on both.
        self.assert_same_result(*self.run_on_both(tasks.echo, (1, 2), nested={"a": (3,)}))

    def test_other_arguments_are_refused_with_djangos_error(self):
        for value in (datetime.date(2025, 1, 1), object(), {1, 2}):
            with self.subTest(value=value):
                with self.assertRaises(TypeError) as expected:
                    immediately(tasks.echo).enqueue(value)
                with self.assertRaisesMessage(TypeError, str(expected.exception)):
                    tasks.echo.enqueue(value)
        self.assertFalse(TaskExec.objects.exists())

    def test_enqueue_in_a_transaction_is_seen_once_committed(self):
        with transaction.atomic():
            result = tasks.add.enqueue(1)
            with self.assertRaises(TaskResultDoesNotExist):
                in_another_thread(lambda: tasks.add.get_result(result.id))
        self.assertEqual(in_another_thread(lambda: tasks.add.get_result(result.id)).status, Status.READY)

    def test_a_unique_call_waiting_is_the_result_of_the_same_call(self):
        first = tasks.unique_echo.enqueue("x")
        again = tasks.unique_echo.enqueue("x")
        other = tasks.unique_echo.enqueue("y")
        self.assertEqual(again.id, first.id)
        self.assertNotEqual(other.id, first.id)
        self.assertEqual(TaskExec.objects.count(), 2)


class ResultTests(ComparedTestCase):
    def test_get_result_and_refresh_from_another_connection(self):
        result = tasks.add.enqueue(4, 5)
        seen = in_another_thread(lambda: tasks.add.get_result(result.id))
        self.assertEqual((seen.status, seen.args, seen.enqueued_at), (Status.READY, [4, 5], result.enqueued_at))
        drain()
        in_another_thread(result.refresh)
        self.assertEqual((result.status, result.return_value, result.attempts), (Status.SUCCESSFUL, 9, 1))

    def test_results_are_whole_though_made_without_task_result_init(self):
        # Made field by field, so as not to normalize the arguments read back again: one
        # field missing (Django added one, or we forgot it) fails the comparison.
        finished = []

        def record(sender, task_result, **kwargs):
            finished.append(task_result)

        backend.task_finished.connect(record, weak=False)
        self.addCleanup(backend.task_finished.disconnect, record)
        result = tasks.echo.enqueue(1, "two", three=[3.0, None, {"four": True}])
        drain()
        fields = dataclasses.fields(backend.TaskResult)
        for ours in (finished[0], tasks.echo.get_result(result.id)):
            made = backend.TaskResult(**{field.name: getattr(ours, field.name) for field in fields if field.init})
            object.__setattr__(made, "_return_value", [[1, "two"], {"three": [3.0, None, {"four": True}]}])
            self.assertEqual(ours, made)
            self.assertEqual((type(ours), ours.args, ours.kwargs), (type(made), made.args, made.kwargs))

    def test_missing_and_malformed_ids(self):
        native = native_tasks.add.queue(1)
        retried = tasks.always_fails.enqueue()
        drain()
        retry = TaskExec.objects.get(attempt=2)
        ids = ["999999", "abc", "", " 1", "1.0", "-1", "9" * 30, str(native.pk), str(retry.pk), None, 1]
        for result_id in ids:
            with self.subTest(result_id=result_id), self.assertRaises(TaskResultDoesNotExist):
                backend.task_backends["default"].get_result(result_id)
        self.assertEqual(tasks.always_fails.get_result(retried.id).attempts, 2)

    def test_context_and_attempts(self):
        expected, ours = self.run_on_both(tasks.describe, "v")
        self.assertEqual(ours.return_value, {"id": ours.id, "attempt": 1, "value": "v"})
        self.assertEqual(expected.return_value, {"id": expected.id, "attempt": 1, "value": "v"})
        self.assertEqual((ours.attempts, ours.status), (expected.attempts, expected.status))

    def test_failure_with_its_exception_class_and_traceback(self):
        expected, ours = self.run_on_both(tasks.fail, "bad news")
        self.assert_same_result(expected, ours)
        (error,) = ours.errors
        self.assertIs(error.exception_class, tasks.TaskFailure)
        self.assertIn('raise TaskFailure(message)', error.traceback)
        self.assertEqual(error.traceback.splitlines()[-1], expected.errors[0].traceback.splitlines()[-1])

    def test_system_exit_fails_the_task_not_the_worker(self):
        expected, ours = self.run_on_both(tasks.exit_task)
        self.assert_same_result(expected, ours)
        self.assertEqual(ours.errors[0].exception_class_path, "builtins.SystemExit")

    def test_keyboard_interrupt_fails_the_task_not_the_worker(self):
        # Django's ImmediateBackend lets it through, to stop the caller: a worker carries on.
        interrupted, after = tasks.keyboard_interrupt.enqueue(), tasks.add.enqueue(1)
        drain()
        interrupted.refresh()
        after.refresh()
        self.assertEqual(interrupted.status, Status.FAILED)
        self.assertEqual(interrupted.errors[0].exception_class_path, "builtins.KeyboardInterrupt")
        self.assertEqual((after.status, after.return_value), (Status.SUCCESSFUL, 1))

    def test_a_result_that_is_not_json_fails_with_a_type_error(self):
        expected, ours = self.run_on_both(tasks.unstorable)
        self.assert_same_result(expected, ours)
        self.assertEqual(ours.errors[0].exception_class_path, "builtins.TypeError")

    def test_a_result_that_is_not_json_is_not_retried(self):
        result = tasks.unstorable_retried.enqueue("once")
        drain()
        result.refresh()
        self.assertEqual((result.status, result.attempts), (Status.FAILED, 1))
        self.assertEqual(Execution.objects.count(), 1)

    def test_priority_order(self):
        for priority in (0, 5, -3, 100):
            tasks.record.using(priority=priority).enqueue(f"priority {priority}")
        tasks.record.using(priority=5).enqueue("priority 5, later")
        drain(threads=1)
        self.assertEqual(
            list(Execution.objects.order_by("id").values_list("key", flat=True)),
            ["priority 100", "priority 5", "priority 5, later", "priority 0", "priority -3"],
        )

    def test_run_after_waits(self):
        run_after = timezone.now() + datetime.timedelta(hours=1)
        result = tasks.add.using(run_after=run_after).enqueue(1)
        drain()
        result.refresh()
        self.assertEqual(result.status, Status.READY)
        self.assertEqual(TaskExec.objects.get().state, States.SLEEPING)
        with time_machine.travel(run_after + datetime.timedelta(seconds=1)):
            drain()
        ours = tasks.add.get_result(result.id)
        self.assertEqual((ours.status, ours.return_value, ours.task.run_after), (Status.SUCCESSFUL, 1, run_after))
        self.assertGreaterEqual(ours.started_at, run_after)

    def test_run_after_is_told_apart_from_none(self):
        past = timezone.now() - datetime.timedelta(minutes=1)
        with_past = tasks.add.using(run_after=past).enqueue(1)
        without = tasks.add.enqueue(2)
        self.assertEqual(tasks.add.get_result(with_past.id).task.run_after, past)
        self.assertIsNone(tasks.add.get_result(without.id).task.run_after)


class SignalTests(ComparedTestCase):
    def record_signals(self):
        received = []

        def receiver(signal_name):
            def receive(sender, task_result, **kwargs):
                received.append((signal_name, sender, task_result.status, sys.exc_info()[0]))

            return receive

        receivers = {name: receiver(name) for name in ("enqueued", "started", "finished")}
        signals = {"enqueued": task_enqueued, "started": backend.task_started, "finished": backend.task_finished}
        for name, signal_ in signals.items():
            signal_.connect(receivers[name], weak=False)
            self.addCleanup(signal_.disconnect, receivers[name])
        return received

    def test_the_three_signals(self):
        received = self.record_signals()
        self.run_on_both(tasks.add, 1)
        self.run_on_both(tasks.fail)
        immediate, ours = type(backend.task_backends["immediate"]), backend.TaskBackend
        expected = [
            [("enqueued", sender, Status.READY, None), ("started", sender, Status.RUNNING, None)]
            for sender in (immediate, ours)
        ]
        self.assertEqual(
            received,
            [
                *expected[0], ("finished", immediate, Status.SUCCESSFUL, None),
                *expected[1], ("finished", ours, Status.SUCCESSFUL, None),
                *expected[0], ("finished", immediate, Status.FAILED, tasks.TaskFailure),
                *expected[1], ("finished", ours, Status.FAILED, tasks.TaskFailure),
            ],
        )


    def test_task_finished_is_sent_once_the_outcome_is_stored(self):
        stored = []

        def read_back(sender, task_result, **kwargs):
            stored.append((task_result.status, backend.task_backends["default"].get_result(task_result.id).status))

        backend.task_finished.connect(read_back, weak=False)
        self.addCleanup(backend.task_finished.disconnect, read_back)
        tasks.add.enqueue(1)
        tasks.fail.enqueue()
        drain()
        self.assertEqual(stored, [(Status.SUCCESSFUL, Status.SUCCESSFUL), (Status.FAILED, Status.FAILED)])

    def test_a_receiver_that_raises_changes_nothing_of_the_outcome(self):
        def broken(**kwargs):
            raise RuntimeError("broken receiver")

        for signal_ in (backend.task_started, backend.task_finished):
            signal_.connect(broken, weak=False)
            self.addCleanup(signal_.disconnect, broken)
        result = tasks.add.enqueue(2)
        # Logged once each, by Django, with the traceback.
        with self.assertLogs("django.dispatch", "ERROR") as logs, self.assertNoLogs("django_toosimple_q", "ERROR"):
            drain()
        result.refresh()
        self.assertEqual((result.status, result.return_value), (Status.SUCCESSFUL, 2))
        self.assertEqual([record.exc_info[1].args for record in logs.records], [("broken receiver",)] * 2)


class InvalidTests(TransactionTestCase):
    def test_a_task_no_longer_in_the_code_is_invalid(self):
        result = tasks.add.enqueue(1)
        TaskExec.objects.update(task_name="tests.testapp.framework_tasks.removed")
        drain()
        execution = TaskExec.objects.get()
        self.assertEqual(execution.state, States.INVALID)
        self.assertIn("cannot be run here", execution.error)
        self.assertEqual(execution.pk, int(result.id))

    def test_the_result_of_a_task_no_longer_in_the_code_is_still_read(self):
        result = tasks.add.using(priority=3).enqueue(1)
        TaskExec.objects.update(task_name="tests.testapp.framework_tasks.removed")
        ours = backend.task_backends["default"]
        waiting = ours.get_result(result.id)
        self.assertEqual((waiting.status, waiting.args, waiting.task.priority), (Status.READY, [1], 3))
        self.assertEqual(waiting.task.module_path, "tests.testapp.framework_tasks.removed")
        drain()
        self.assertEqual(ours.get_result(result.id).status, Status.FAILED)

    def test_a_worker_without_the_framework_marks_its_rows_invalid(self):
        tasks.add.enqueue(1)
        # As where neither django.tasks nor the backport is installed: the import fails.
        with mock.patch.dict(sys.modules, {"django_toosimple_q.worker.framework": None}):
            with mock.patch.dict(worker_package.__dict__):
                del worker_package.__dict__["framework"]
                drain()
        execution = TaskExec.objects.get()
        self.assertEqual(execution.state, States.INVALID)
        self.assertIn("was queued through django.tasks", execution.error)


class RetryTests(TransactionTestCase):
    def test_retries_keep_one_id(self):
        result = tasks.flaky.enqueue("flaky")
        drain()
        result.refresh()
        self.assertEqual((result.status, result.return_value, result.attempts), (Status.SUCCESSFUL, "second run", 2))
        (error,) = result.errors
        self.assertEqual(error.exception_class_path, "tests.testapp.framework_tasks.TaskFailure")
        first, retry = TaskExec.objects.order_by("id")
        self.assertEqual((str(first.pk), first.replaced_by, retry.attempt), (result.id, retry, 2))
        self.assertEqual(result.last_attempted_at, retry.started)
        self.assertEqual(result.started_at, first.started)

    def test_a_retry_is_given_the_call_as_it_was_queued(self):
        # Whatever the first attempt did to its arguments, and to its result's.
        result = tasks.changes_its_arguments.enqueue([1], {"a": 2})
        drain()
        result.refresh()
        self.assertEqual((result.status, result.return_value), (Status.SUCCESSFUL, [[1], {"a": 2}]))
        first, retry = TaskExec.objects.order_by("id")
        self.assertEqual((first.args, retry.args), ([[1], {"a": 2}], [[1], {"a": 2}]))

    def test_a_call_that_fails_every_attempt(self):
        result = tasks.always_fails.enqueue()
        drain()
        result.refresh()
        self.assertEqual((result.status, result.attempts, len(result.errors)), (Status.FAILED, 2, 2))
        self.assertEqual(result.finished_at, TaskExec.objects.get(attempt=2).finished)


    def test_requeue_is_a_new_call_with_its_own_result(self):
        result = tasks.add.enqueue(1, b=2)
        drain()
        again = TaskExec.objects.get(pk=result.id).queue_again()
        self.assertEqual((again.backend, again.attempt), ("default", 1))
        drain()
        self.assertEqual(tasks.add.get_result(str(again.pk)).return_value, 3)


class KilledWorkerTests(TransactionTestCase):
    def test_a_task_of_a_sigkilled_worker_runs_again_under_the_same_id(self):
        # The case where a row left RUNNING by a dead worker would be lost.
        pid_file = os.path.join(tempfile.mkdtemp(prefix="toosimpleq-backend-"), "pid")
        result = tasks.killed_on_first_attempt.enqueue(pid_file)
        fast = {"TOOSIMPLEQ_TEST_HEARTBEAT": "0.2", "TOOSIMPLEQ_TEST_WORKER_TIMEOUT": "2"}
        doomed = start_worker("--no_schedules", env=fast)
        self.addCleanup(doomed.communicate)
        self.addCleanup(doomed.kill)
        wait_for(lambda: os.path.exists(pid_file), message="the first attempt to start")
        result.refresh()
        self.assertEqual((result.status, result.attempts), (Status.RUNNING, 1))
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        rescuer = start_worker("--no_schedules", env=fast)
        self.addCleanup(rescuer.communicate)
        self.addCleanup(rescuer.terminate)
        wait_for(lambda: tasks.killed_on_first_attempt.get_result(result.id).is_finished, message="the rerun")
        result.refresh()
        self.assertEqual((result.status, result.return_value, result.attempts), (Status.SUCCESSFUL, 2, 2))
        self.assertEqual(result.errors, [])
        self.assertEqual(len(set(result.worker_ids)), 2)


class ScheduleTests(TransactionTestCase):
    def test_a_django_tasks_task_on_a_cron(self):
        decorated = schedule("0 8 * * *", name="framework", args=[1], kwargs={"b": 2}, last_run=None)(tasks.add)
        self.addCleanup(schedules_registry.pop, "framework")
        self.assertIs(decorated, tasks.add)
        scheduler = Scheduler(QueueFilter())
        scheduler.sync()
        (execution,) = scheduler.run_due()
        self.assertEqual(ScheduleExec.objects.get().last_task, execution)
        drain()
        result = tasks.add.get_result(str(execution.pk))
        self.assertEqual((result.status, result.return_value, result.args, result.kwargs), (Status.SUCCESSFUL, 3, [1], {"b": 2}))

    def test_its_datetime_kwarg_is_iso_8601_text(self):
        schedule("0 8 * * *", name="framework dated", datetime_kwarg="at", last_run=None)(tasks.echo)
        self.addCleanup(schedules_registry.pop, "framework dated")
        now = datetime.datetime(2025, 6, 2, 8, tzinfo=datetime.timezone.utc)
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now)
        (execution,) = scheduler.run_due(now)
        drain()
        self.assertEqual(tasks.echo.get_result(str(execution.pk)).return_value, [[], {"at": "2025-06-02T08:00:00Z"}])


class TimeoutTests(TransactionTestCase):
    def test_register_task_under_task_gives_the_timeout(self):
        self.assert_timed_out(tasks.naps)

    @unittest.skipUnless(TASK_TAKES_OPTIONS, "Django 6.0's @task takes none of our options")
    def test_task_decorator_gives_the_timeout(self):
        self.assert_timed_out(framework_options.naps)

    def assert_timed_out(self, naps):
        """``naps`` (timeout 0.3 s) ends FAILED with TaskTimeout, as the native API's tasks do; task_finished says so."""
        finished = []

        def receive(sender, task_result, **kwargs):
            finished.append((task_result.status, sys.exc_info()[0]))

        backend.task_finished.connect(receive, weak=False)
        self.addCleanup(backend.task_finished.disconnect, receive)
        result = naps.enqueue(30)
        drain()
        result.refresh()
        self.assertEqual(result.status, Status.FAILED)
        (error,) = result.errors
        self.assertEqual(error.exception_class_path, TIMEOUT_CLASS)
        self.assertTrue(error.traceback.startswith("timed out after 0.3 s\n"), error.traceback)
        self.assertEqual(finished, [(Status.FAILED, worker_package.timeouts.TaskTimeout)])

    def test_a_thread_stuck_past_its_timeout_fails_its_result_with_task_timeout(self):
        self.addCleanup(tasks.release_stuck.clear)
        self.addCleanup(tasks.release_stuck.set)
        result = tasks.stuck.enqueue()
        drain()
        result.refresh()
        self.assertEqual(result.status, Status.FAILED)
        self.assertEqual([error.exception_class_path for error in result.errors], [TIMEOUT_CLASS])


@unittest.skipUnless(TASK_TAKES_OPTIONS, "Django 6.0's @task takes none of our options")
class TaskDecoratorOptionTests(IsolatedRegistries, TransactionTestCase):
    def test_retries(self):
        result = framework_options.always_fails.enqueue()
        drain()
        result.refresh()
        self.assertEqual((result.status, result.attempts), (Status.FAILED, 2))

    def test_unique(self):
        first = framework_options.unique_echo.enqueue("x")
        self.assertEqual(framework_options.unique_echo.enqueue("x").id, first.id)
        self.assertEqual(TaskExec.objects.count(), 1)

    def test_the_retry_of_a_unique_call_is_not_queued_when_the_same_call_waits(self):
        result = framework_options.unique_queued_again_then_fails.enqueue("x")
        Worker(threads=1, max_tasks=1, schedules=False).run()
        result.refresh()
        self.assertEqual((result.status, result.attempts), (Status.FAILED, 1))
        waiting = TaskExec.objects.get(state=States.QUEUED)
        self.assertEqual((waiting.attempt, waiting.args), (1, ["x"]))
        self.assertEqual(TaskExec.objects.count(), 2)

    def test_given_both_to_task_and_to_register_task_is_an_error(self):
        with self.assertRaisesMessage(InvalidTask, "either to @task(...) or to the @register_task(...) under it"):
            task(retries=1)(register_task(retries=2)(configured_twice))


def configured_twice():
    """A module-level function, as Django's tasks must be."""
