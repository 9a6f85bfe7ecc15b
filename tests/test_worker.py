"""The worker: its command-line flags, and how it runs tasks and stores outcomes."""

import asyncio
import datetime
import io
import logging
import os
import signal
import socket
import time
import uuid
from unittest import mock

from django.core.management import call_command
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q import store
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker

from .helpers import start_worker, wait_for
from .testapp import tasks
from .testapp.models import Execution

States = TaskExec.States
SIGNALS = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGBREAK") if hasattr(signal, name)]


def run_in_process(**options):
    """Run a Worker in this thread until it is done; returns it."""
    # No schedules: these tests count the tasks they queued themselves.
    options = {"until_done": True, "schedules": False, **options}
    worker = Worker(**options)
    worker.run()
    return worker


def start(test, worker):
    """Start ``worker`` in its own thread, stopped at the end of ``test``."""
    worker.start()
    test.addCleanup(worker.join, timeout=30)
    test.addCleanup(worker.stop, grace=0)
    return worker


def state_of(execution):
    return TaskExec.objects.get(pk=execution.pk).state


def states(executions):
    return [state_of(execution) for execution in executions]


class WorkerCommandTests(TransactionTestCase):
    """``manage.py worker`` run in this process (what it runs is the same Worker)."""

    def call_worker(self, *args):
        """Run the command in this process; returns what it logged on stderr."""
        # The command installs its signal handlers: put the test runner's back.
        handlers = {signum: signal.getsignal(signum) for signum in SIGNALS}
        stderr = io.StringIO()
        try:
            call_command("worker", "--no_schedules", *args, stderr=stderr)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return stderr.getvalue()

    def test_until_done_runs_what_is_due_then_exits(self):
        queued = [tasks.add.queue(i) for i in range(3)]
        woken = tasks.add.using(due=timezone.now() + datetime.timedelta(hours=1)).queue(10)
        TaskExec.objects.filter(pk=woken.pk).update(due=timezone.now())  # its time has come
        later = tasks.add.using(due=timezone.now() + datetime.timedelta(hours=1)).queue(20)
        self.call_worker("--until_done")
        self.assertEqual(states(queued + [woken]), [States.SUCCEEDED] * 4)
        self.assertEqual(TaskExec.objects.get(pk=woken.pk).result, 10)
        # Not due yet: not waited for.
        self.assertEqual(states([later]), [States.SLEEPING])
        status = WorkerStatus.objects.get()
        self.assertEqual((status.exit_code, status.state), (0, WorkerStatus.States.STOPPED))

    def test_once_runs_one_task_then_exits(self):
        low = tasks.add.queue(1)
        high = tasks.add.using(priority=1).queue(2)
        other = tasks.add.queue(3)
        self.call_worker("--once")
        self.assertEqual(states([high, low, other]), [States.SUCCEEDED, States.QUEUED, States.QUEUED])

    def test_once_with_nothing_waiting_exits_at_once(self):
        tasks.add.using(due=timezone.now() + datetime.timedelta(hours=1)).queue(1)
        self.call_worker("--once")
        self.assertEqual(WorkerStatus.objects.get().exit_code, 0)
        self.assertEqual(TaskExec.objects.get().state, States.SLEEPING)

    def test_queue_serves_only_the_given_queues(self):
        executions = {queue: tasks.add.using(queue=queue).queue(1) for queue in ("q1", "q2", "q3", "default")}
        self.call_worker("--queue", "q1", "--queue", "q2", "--until_done")
        self.assertEqual(
            {queue: state_of(execution) for queue, execution in executions.items()},
            {"q1": States.SUCCEEDED, "q2": States.SUCCEEDED, "q3": States.QUEUED, "default": States.QUEUED},
        )
        status = WorkerStatus.objects.get()
        self.assertEqual((status.queues, status.excluded_queues), (["q1", "q2"], []))

    def test_exclude_queue_serves_every_other_queue(self):
        executions = {queue: tasks.add.using(queue=queue).queue(1) for queue in ("q1", "q2", "q3", "default")}
        self.call_worker("--exclude_queue", "q1", "--exclude_queue", "q3", "--until_done")
        self.assertEqual(
            {queue: state_of(execution) for queue, execution in executions.items()},
            {"q1": States.QUEUED, "q2": States.SUCCEEDED, "q3": States.QUEUED, "default": States.SUCCEEDED},
        )
        status = WorkerStatus.objects.get()
        self.assertEqual((status.queues, status.excluded_queues), ([], ["q1", "q3"]))

    def test_threads_run_tasks_at_the_same_time(self):
        # Each task waits until all four run at once: one thread short, they
        # would all fail.
        barrier_name = f"threads-{uuid.uuid4()}"
        executions = [tasks.rendezvous.queue(barrier_name, 4) for _ in range(4)]
        self.call_worker("--threads", "4", "--until_done")
        rows = [TaskExec.objects.get(pk=execution.pk) for execution in executions]
        self.assertEqual([row.state for row in rows], [States.SUCCEEDED] * 4, [row.error for row in rows])
        self.assertEqual(len({row.result for row in rows}), 4)  # four threads
        self.assertEqual(WorkerStatus.objects.get().threads, 4)

    def test_label(self):
        execution = tasks.add.queue(1)
        self.call_worker("--label", "night-shift", "--until_done")
        status = WorkerStatus.objects.get()
        self.assertEqual(status.label, "night-shift")
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).worker, status)

    def test_default_label_and_threads(self):
        self.call_worker("--until_done")
        status = WorkerStatus.objects.get()
        self.assertEqual(status.label, f"{socket.gethostname()}-{os.getpid()}")
        self.assertEqual((status.hostname, status.pid, status.threads), (socket.gethostname(), os.getpid(), 1))

    def test_verbosity_sets_what_the_worker_logs(self):
        # As in a project without LOGGING for the package: the command
        # then shows the worker's log lines on its stderr.
        logger = logging.getLogger("django_toosimple_q")
        self.addCleanup(logger.setLevel, logger.level)
        outputs = {}
        for verbosity in ("0", "1", "2"):
            execution = tasks.add.queue(1)
            with mock.patch.object(logger, "handlers", []):
                outputs[verbosity] = self.call_worker("--verbosity", verbosity, "--until_done")
        self.assertEqual(outputs["0"], "")
        self.assertIn("started: 1 thread(s), queues all", outputs["1"])
        self.assertNotIn("running tests.add", outputs["1"])
        self.assertIn(f"running tests.add #{execution.pk}", outputs["2"])

    def test_max_tasks_exits_after_that_many_tasks(self):
        # Not --until_done: only the budget ends this worker. A subprocess,
        # so that a worker that does not stop cannot hang the test run.
        executions = [tasks.add.queue(i) for i in range(5)]
        worker = start_worker("--max_tasks", "3", "--threads", "2", "--no_schedules", "--tick", "0.05")
        self.addCleanup(worker.kill)
        _, stderr = worker.communicate(timeout=60)
        self.assertEqual(worker.returncode, 0, stderr)
        self.assertEqual(sorted(states(executions)), [States.QUEUED] * 2 + [States.SUCCEEDED] * 3)


class RunningTests(TransactionTestCase):
    def test_outcome_of_a_task(self):
        before = timezone.now()
        execution = tasks.add.queue(2, b=3)
        worker = run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((row.state, row.result, row.result_preview, row.error), (States.SUCCEEDED, 5, "5", ""))
        self.assertEqual(row.worker_id, worker.status.pk)
        self.assertTrue(before <= row.started <= row.finished <= timezone.now())
        self.assertIsNone(row.dedup_key)
        self.assertEqual(worker.exit_code, 0)

    def test_exception_fails_the_task_with_its_traceback(self):
        execution = tasks.fail.queue("it broke")
        run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(row.state, States.FAILED)
        self.assertIn("Traceback (most recent call last)", row.error)
        self.assertIn("ValueError: it broke", row.error)
        self.assertIsNone(row.result)
        self.assertIsNone(row.replaced_by)  # no retries
        self.assertEqual(TaskExec.objects.count(), 1)

    def test_output_is_stored_with_the_task(self):
        execution = tasks.chatter.queue("solo", 2, "chatter-solo", 1)
        run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(row.stdout, "solo print 0\nsolo write 0\nsolo print 1\nsolo write 1\n")
        self.assertEqual(row.stderr, "solo stderr 0\nsolo log 0\nsolo stderr 1\nsolo log 1\n")

    def test_loop_claims_no_more_than_its_idle_threads(self):
        release = f"no-hoarding-{uuid.uuid4()}"
        executions = [tasks.wait_for_event.queue(release) for _ in range(5)]
        worker = start(self, Worker(threads=2, tick=0.02, until_done=True, schedules=False))
        self.addCleanup(tasks.event(release).set)
        wait_for(lambda: TaskExec.objects.filter(state=States.PROCESSING).count() >= 2, message="2 tasks running")
        # The loop keeps polling while both threads are busy; give it a few ticks.
        time.sleep(0.2)
        self.assertEqual(sorted(states(executions)), [States.PROCESSING] * 2 + [States.QUEUED] * 3)
        tasks.event(release).set()
        worker.join(timeout=30)
        self.assertEqual(states(executions), [States.SUCCEEDED] * 5)
        self.assertEqual(worker.exit_code, 0)

    @override_settings(TOOSIMPLEQ_HEARTBEAT=300)
    def test_a_freed_thread_wakes_the_loop_before_its_tick(self):
        executions = [tasks.add.queue(i) for i in range(3)]
        # With a tick of 5 minutes, only a freed thread can start the others.
        worker = start(self, Worker(threads=1, tick=300, until_done=True, schedules=False))
        worker.join(timeout=30)
        self.assertEqual(states(executions), [States.SUCCEEDED] * 3)

    def test_a_sleeping_task_runs_once_due_and_not_before(self):
        start(self, Worker(tick=0.02, schedules=False))
        due = timezone.now() + datetime.timedelta(seconds=0.3)
        execution = tasks.add.queue(1, due=due)
        wait_for(lambda: states([execution]) == [States.SUCCEEDED], message="the sleeping task to run")
        self.assertGreaterEqual(TaskExec.objects.get(pk=execution.pk).started, due)

    def test_unregistered_task_is_invalid_and_nothing_else_changes(self):
        unknown = TaskExec.objects.create(task_name="tests.gone", args=[1], retries=3)
        known = tasks.add.queue(1)
        elsewhere = tasks.add.using(queue="elsewhere").queue(2)
        run_in_process(queues=["default"])
        row = TaskExec.objects.get(pk=unknown.pk)
        self.assertEqual(row.state, States.INVALID)
        self.assertEqual(row.error, "Task 'tests.gone' is not registered: it was renamed or removed from the code")
        self.assertIsNone(row.replaced_by)  # not retried
        self.assertEqual(states([known, elsewhere]), [States.SUCCEEDED, States.QUEUED])
        self.assertEqual(TaskExec.objects.count(), 3)

    def test_result_preview(self):
        short = tasks.echo.queue({"a": [1, 2]})
        long = tasks.echo.queue("x" * 1000)
        run_in_process()
        self.assertEqual(TaskExec.objects.get(pk=short.pk).result_preview, "{'a': [1, 2]}")
        row = TaskExec.objects.get(pk=long.pk)
        self.assertEqual(len(row.result_preview), 255)
        self.assertTrue(row.result_preview.startswith("xxx"))
        self.assertTrue(row.result_preview.endswith("…"))
        self.assertEqual(row.result, "x" * 1000)  # the preview is only a preview

    def test_a_result_that_cannot_be_stored_succeeds_without_it_and_is_not_run_again(self):
        as_set = tasks.unstorable_retried.queue("set")  # retries=2
        as_object = tasks.unstorable_retried.using(priority=-1).queue("object")
        after = tasks.add.using(priority=-2).queue(1)
        with self.assertLogs("django_toosimple_q", logging.WARNING) as logs:
            worker = run_in_process()
        for execution, kind, preview in ((as_set, "set", "{1, 2}"), (as_object, "object", "<object object at")):
            row = TaskExec.objects.get(pk=execution.pk)
            self.assertEqual((row.state, row.result, row.replaced_by), (States.SUCCEEDED, None, None))
            self.assertTrue(row.result_preview.startswith(preview), row.result_preview)
            self.assertTrue(
                row.error.startswith(
                    f"The task succeeded, but its result was not kept: the return value of type {kind} cannot be stored"
                ),
                row.error,
            )
        self.assertEqual(Execution.objects.filter(key__startswith="unstorable").count(), 2)  # each ran once
        self.assertEqual(sum("its result was not kept" in line for line in logs.output), 2)
        self.assertEqual(states([after]), [States.SUCCEEDED])
        self.assertEqual((worker.exit_code, TaskExec.objects.count()), (0, 3))

    def test_a_result_nested_too_deep_succeeds_without_it(self):
        execution = tasks.nested.queue(1200)
        run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual((row.state, row.result), (States.SUCCEEDED, None))
        self.assertIn("is nested more than 100 levels deep", row.error)

    def test_a_retry_whose_due_time_overflows_fails_with_the_reason(self):
        # Only a row of an older release, or a cap set as high, has such a delay.
        TaskExec.objects.create(task_name="tests.fail", retries=3, retry_delay=10**12)
        with override_settings(TOOSIMPLEQ_MAX_RETRY_DELAY=10**13):
            worker = run_in_process()
        row = TaskExec.objects.get()  # no retry queued
        self.assertEqual((row.state, row.replaced_by), (States.FAILED, None))
        self.assertTrue(row.error.startswith("The outcome of the task could not be stored: OverflowError"), row.error)
        self.assertIn("ValueError: boom", row.error)  # what the task's own failure was
        self.assertEqual(worker.exit_code, 0)

    def test_a_retry_is_queued_with_the_call_as_it_was_queued(self):
        # Whatever the failed run did to the arguments it was given.
        first = tasks.changes_its_arguments.queue("worker", [1], {"a": 2})
        run_in_process()
        retry = TaskExec.objects.get(pk=first.pk).replaced_by
        self.assertEqual((retry.args, retry.kwargs), (["worker", [1], {"a": 2}], {}))
        self.assertEqual((retry.state, retry.result), (States.SUCCEEDED, [[1], {"a": 2}]))

    def test_any_error_storing_an_outcome_ends_the_row_rather_than_leaving_it_processing(self):
        execution = tasks.add.queue(1)
        real_finish_params = store._finish_params

        def finish_refusing_results(database, endings, adapters):
            if any("result" in outcome for _, _, outcome in endings):
                raise ValueError("cannot adapt")
            return real_finish_params(database, endings, adapters)

        with mock.patch.object(store, "_finish_params", finish_refusing_results):
            run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(row.state, States.SUCCEEDED)
        self.assertEqual(row.error, "The outcome of the task could not be stored: ValueError: cannot adapt")

    def test_nul_characters_in_a_result_or_in_the_output(self):
        # PostgreSQL stores no NUL character: refused the same on every database.
        nul_result = tasks.unstorable.queue("nul result")
        nul_output = tasks.unstorable.using(priority=-1).queue("nul output")
        worker = run_in_process()
        result_row, output_row = TaskExec.objects.get(pk=nul_result.pk), TaskExec.objects.get(pk=nul_output.pk)
        self.assertEqual((result_row.state, result_row.result), (States.SUCCEEDED, None))
        self.assertIn("contains a NUL character", result_row.error)
        self.assertEqual((output_row.state, output_row.result), (States.SUCCEEDED, "nul output"))
        self.assertEqual(output_row.stdout, "nul\ufffdbyte\n")
        self.assertEqual(worker.exit_code, 0)

    def test_a_transaction_the_task_left_open_is_rolled_back_and_its_outcome_stored(self):
        # As at the end of a request: what the task did not commit is undone,
        # and its connection is not the one its outcome is written on.
        forgetful = tasks.leave_transaction_open.queue("uncommitted")
        after = tasks.record.using(priority=-1).queue("after")
        worker = run_in_process(threads=1)
        self.assertEqual(states([forgetful, after]), [States.SUCCEEDED, States.SUCCEEDED])
        self.assertEqual(list(Execution.objects.values_list("key", flat=True)), ["after"])
        self.assertEqual(worker.exit_code, 0)


class RetryTests(TransactionTestCase):
    def test_retries_with_a_doubling_delay_until_spent(self):
        execution = tasks.retried.queue()  # retries=3, retry_delay=10
        chain = [execution]
        for retries_left, delay in ((2, 10), (1, 20), (0, 40)):
            run_in_process()
            failed = TaskExec.objects.get(pk=chain[-1].pk)
            self.assertEqual(failed.state, States.FAILED)
            self.assertIn("ValueError: retry me", failed.error)
            retry = failed.replaced_by
            self.assertEqual(retry.state, States.SLEEPING)
            self.assertEqual((retry.retries, retry.retry_delay), (retries_left, delay * 2))
            self.assertAlmostEqual((retry.due - failed.finished).total_seconds(), delay, delta=2)
            self.assertEqual((retry.task_name, retry.args, retry.queue), ("tests.retried", [], "default"))
            chain.append(retry)
            # Its time comes (rather than waiting for it).
            TaskExec.objects.filter(pk=retry.pk).update(due=timezone.now())
        run_in_process()
        last = TaskExec.objects.get(pk=chain[-1].pk)
        self.assertEqual((last.state, last.replaced_by), (States.FAILED, None))
        self.assertEqual(TaskExec.objects.count(), 4)
        self.assertEqual(TaskExec.objects.filter(state=States.FAILED).count(), 4)
        self.assertEqual([row.attempt for row in TaskExec.objects.order_by("id")], [1, 2, 3, 4])

    def test_retry_until_it_succeeds(self):
        execution = tasks.flaky.queue("flaky")  # retries=2, no delay
        run_in_process()
        failed = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(failed.state, States.FAILED)
        retry = failed.replaced_by
        self.assertEqual((retry.state, retry.result, retry.retries), (States.SUCCEEDED, "second run", 1))
        self.assertIsNone(retry.replaced_by)
        self.assertEqual(TaskExec.objects.count(), 2)

    def test_the_delay_between_retries_stops_doubling_at_the_cap(self):
        failed = TaskExec.objects.create(task_name="tests.retried_forever", retries=-1, retry_delay=600)
        delays = []
        with override_settings(TOOSIMPLEQ_MAX_RETRY_DELAY=1000):
            for _ in range(3):
                run_in_process()
                failed.refresh_from_db()
                retry = failed.replaced_by
                delays.append((round((retry.due - failed.finished).total_seconds(), -1), retry.retry_delay))
                TaskExec.objects.filter(pk=retry.pk).update(due=timezone.now(), state=States.QUEUED)
                failed = retry
        self.assertEqual(delays, [(600, 1000), (1000, 1000), (1000, 1000)])

    def test_retries_minus_one_retries_forever(self):
        execution = tasks.retried_forever.queue()
        run_in_process(max_tasks=5)
        rows = list(TaskExec.objects.order_by("id"))
        self.assertEqual(rows[0].pk, execution.pk)
        self.assertEqual([row.state for row in rows], [States.FAILED] * 5 + [States.QUEUED])
        for row, following in zip(rows, rows[1:]):
            self.assertEqual(row.replaced_by_id, following.pk)
        self.assertEqual({row.retries for row in rows}, {-1})


class AsyncTaskTests(TransactionTestCase):
    def test_an_async_task_runs_on_its_executor_thread_with_its_output(self):
        executions = [tasks.async_echo.queue(value) for value in ("a", "b")]
        worker = run_in_process(threads=2)
        for execution, value in zip(executions, ("a", "b")):
            row = TaskExec.objects.get(pk=execution.pk)
            self.assertEqual((row.state, row.result), (States.SUCCEEDED, value), row.error)
            # Printed from the event loop, on the worker's own thread: captured.
            self.assertRegex(row.stdout, rf"^async {value} on toosimpleq-{worker.label}_\d+\n$")
        self.assertEqual(sorted(Execution.objects.values_list("key", flat=True)), ["async a", "async b"])

    def test_an_async_task_that_raises_fails_with_its_traceback(self):
        execution = tasks.async_fail.queue()
        run_in_process()
        row = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(row.state, States.FAILED)
        self.assertIn("ValueError: async boom", row.error)

    def test_called_inline_an_async_task_returns_its_coroutine(self):
        coroutine = tasks.async_fail()
        self.assertTrue(asyncio.iscoroutine(coroutine))
        with self.assertRaisesMessage(ValueError, "async boom"):
            asyncio.run(coroutine)


class BaseExceptionTests(TransactionTestCase):
    def test_system_exit_and_keyboard_interrupt_fail_the_task_not_the_worker(self):
        exits = tasks.exit_task.queue(3)
        interrupts = tasks.keyboard_interrupt.using(priority=-1).queue()
        after = tasks.record.using(priority=-2).queue("after")
        # A real worker process: it must neither exit nor stop.
        worker = start_worker("--until_done", "--no_schedules")
        self.addCleanup(worker.kill)
        _, stderr = worker.communicate(timeout=60)
        self.assertEqual(worker.returncode, 0, stderr)
        self.assertNotIn("Traceback", stderr)
        self.assertEqual(states([exits, interrupts, after]), [States.FAILED] * 2 + [States.SUCCEEDED])
        self.assertIn("SystemExit: 3", TaskExec.objects.get(pk=exits.pk).error)
        self.assertIn("KeyboardInterrupt", TaskExec.objects.get(pk=interrupts.pk).error)
        self.assertTrue(Execution.objects.filter(key="after").exists())
        self.assertEqual(WorkerStatus.objects.get().exit_code, 0)
