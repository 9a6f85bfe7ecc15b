"""Task timeouts: a task past its timeout is ended, or its thread abandoned,
and the worker keeps its capacity for the other tasks."""

import threading
import time

from django.core.exceptions import ImproperlyConfigured
from django.test import TransactionTestCase, override_settings

from django_toosimple_q.decorators import register_task
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.timeouts import TaskTimeout

from .helpers import IsolatedRegistries, wait_for
from .testapp import tasks

States = TaskExec.States


def row(execution):
    return TaskExec.objects.get(pk=execution.pk)


class TimeoutTests(IsolatedRegistries, TransactionTestCase):
    def setUp(self):
        super().setUp()
        # Lets the stuck tasks end at the test's end, so that no thread outlives it.
        self.release = threading.Event()
        self.addCleanup(self.release.set)

    def start(self, **options):
        worker = Worker(schedules=False, tick=0.05, **options)
        worker.start()
        self.addCleanup(worker.join, timeout=30)
        self.addCleanup(worker.stop, grace=0)
        wait_for(lambda: worker.status is not None, message="the worker to register")
        return worker

    def wait_state(self, execution, state):
        wait_for(lambda: row(execution).state == state, timeout=30, message=f"#{execution.pk} to be {state}")
        return row(execution)

    def register_busy_loop(self):
        @register_task("tests.busy_loop", timeout=0.3)
        def busy_loop():
            while not self.release.is_set():
                pass

        return busy_loop

    def register_stuck(self, **options):
        """A task that blocks in C code (a lock's wait), where no exception reaches it."""

        @register_task("tests.stuck", timeout=0.3, **options)
        def stuck():
            self.release.wait()
            return "late"

        return stuck

    def test_a_busy_python_loop_is_ended_and_its_thread_runs_the_next_task(self):
        busy = self.register_busy_loop().queue()
        worker = self.start()
        failed = self.wait_state(busy, States.FAILED)
        self.assertTrue(failed.error.startswith("timed out after 0.3 s"), failed.error)
        self.assertIn("TaskTimeout", failed.error)
        after = tasks.add.queue(1, b=2)
        self.assertEqual(self.wait_state(after, States.SUCCEEDED).result, 3)
        self.assertEqual(worker.abandoned_threads, 0)

    def test_a_sleep_in_short_steps_is_ended(self):
        @register_task("tests.naps", timeout=0.3)
        def naps():
            while not self.release.is_set():
                time.sleep(0.01)

        execution = naps.queue()
        self.start()
        self.assertTrue(self.wait_state(execution, States.FAILED).error.startswith("timed out after 0.3 s"))

    def test_a_thread_stuck_in_c_code_is_abandoned_and_the_worker_keeps_its_throughput(self):
        stuck = self.register_stuck().queue()
        worker = self.start(threads=1)
        failed = self.wait_state(stuck, States.FAILED)
        self.assertEqual(failed.error, "timed out after 0.3 s: its thread was stuck and is abandoned")
        # The one thread is stuck, and yet the other tasks run.
        others = [tasks.add.queue(number, b=1) for number in range(5)]
        for execution in others:
            self.wait_state(execution, States.SUCCEEDED)
        self.assertFalse(self.release.is_set())
        self.assertEqual(worker.abandoned_threads, 1)
        self.assertEqual(WorkerStatus.objects.get(pk=worker.status.pk).abandoned_threads, 1)

    def test_a_task_that_swallows_the_exception_is_abandoned_and_its_late_outcome_refused(self):
        finished = threading.Event()

        @register_task("tests.stubborn", timeout=0.3)
        def stubborn():
            while not self.release.is_set():
                try:
                    time.sleep(0.01)
                except TaskTimeout:
                    pass
            finished.set()
            return "late"

        execution = stubborn.queue()
        worker = self.start()
        failed = self.wait_state(execution, States.FAILED)
        self.assertEqual(worker.abandoned_threads, 1)
        self.release.set()
        finished.wait(timeout=30)
        after = tasks.add.queue(1, b=1)
        self.wait_state(after, States.SUCCEEDED)
        late = row(execution)
        self.assertEqual((late.state, late.result, late.error), (States.FAILED, None, failed.error))

    def test_a_timed_out_task_with_retries_left_is_queued_again(self):
        stuck = self.register_stuck(retries=1).queue()
        self.start()
        failed = self.wait_state(stuck, States.FAILED)
        self.assertIsNotNone(failed.replaced_by)
        self.assertEqual((failed.replaced_by.attempt, failed.replaced_by.retries), (2, 0))

    @override_settings(TOOSIMPLEQ_TASK_TIMEOUT=0.3)
    def test_the_setting_is_the_default_timeout(self):
        @register_task("tests.no_own_timeout")
        def no_own_timeout():
            while not self.release.is_set():
                pass

        execution = no_own_timeout.queue()
        self.start()
        self.assertTrue(self.wait_state(execution, States.FAILED).error.startswith("timed out after 0.3 s"))

    def test_without_a_timeout_a_task_runs_as_long_as_it_takes(self):
        @register_task("tests.slow")
        def slow():
            time.sleep(0.5)
            return "done"

        execution = slow.queue()
        self.start()
        self.assertEqual(self.wait_state(execution, States.SUCCEEDED).result, "done")

    @override_settings(TOOSIMPLEQ_MAX_ABANDONED_THREADS=1)
    def test_a_worker_that_abandoned_too_many_threads_exits_with_its_own_code(self):
        stuck = self.register_stuck()
        executions = [stuck.queue(), tasks.echo.queue("second")]
        TaskExec.objects.filter(pk=executions[1].pk).update(task_name="tests.stuck", args=[])
        worker = self.start(threads=2)
        self.assertEqual(worker.join(timeout=30), WorkerStatus.ExitCodes.ABANDONED_THREADS)
        self.assertEqual(WorkerStatus.objects.get(pk=worker.status.pk).abandoned_threads, 2)
        self.assertEqual([row(execution).state for execution in executions], [States.FAILED] * 2)

    def test_a_timeout_must_be_a_positive_number(self):
        for timeout in (0, -1, "10", True):
            with self.subTest(timeout=timeout), self.assertRaises(ImproperlyConfigured):
                register_task("tests.bad_timeout", timeout=timeout)(lambda: None)
