"""Nothing lost, in one process: heartbeats, reaping, the fenced finish,
the graceful stop, database errors and crashes of the loop.

The same behaviours with real processes killed, stopped and cut off from
their database are in test_chaos.
"""

import datetime
import logging
import os
import threading
import types
from unittest import mock

from django.core.management import call_command
from django.db import DataError, OperationalError, connection
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q import conf, store
from django_toosimple_q.management.commands import worker as worker_command
from django_toosimple_q.worker import loop as worker_loop
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker, executor, recovery
from django_toosimple_q.worker.claiming import QueueFilter

from .helpers import wait_for
from .testapp import tasks

States = TaskExec.States


def worker_status(silent_for=0, **fields):
    """A WorkerStatus row whose last heartbeat was ``silent_for`` seconds ago."""
    fields = {"label": "elsewhere", "hostname": "elsewhere", "pid": 1, **fields}
    return WorkerStatus.objects.create(last_tick=timezone.now() - datetime.timedelta(seconds=silent_for), **fields)


def dead_worker():
    return worker_status(silent_for=conf.WORKER_TIMEOUT * 2)


def claim_for(status, limit=100):
    """Claim the waiting tasks for ``status``, as its loop would have."""
    return store.claim(status.pk, limit, QueueFilter())


def row(execution):
    return TaskExec.objects.get(pk=execution.pk)


def last_tick(worker):
    return WorkerStatus.objects.get(pk=worker.status.pk).last_tick


def start(worker):
    """Start ``worker`` in its thread; it is stopped at once at the test's end."""
    worker.start()
    wait_for(lambda: worker.status is not None, message="the worker to register")
    return worker


class HeartbeatTests(TransactionTestCase):
    def setUp(self):
        # An event of its own: once set, an event stays set for the process.
        self.busy = self.id()
        self.addCleanup(tasks.event(self.busy).set)

    def assert_beats(self, worker, times=3):
        """The worker's last_tick moves on ``times`` times."""
        for _ in range(times):
            before = last_tick(worker)
            wait_for(lambda: last_tick(worker) > before, message="a heartbeat")

    @override_settings(TOOSIMPLEQ_HEARTBEAT=0.05)
    def test_heartbeat_goes_on_while_every_thread_runs_a_long_task(self):
        executions = [tasks.wait_for_event.queue(self.busy) for _ in range(2)]
        worker = start(Worker(threads=2, tick=60, schedules=False))
        self.addCleanup(worker.join, timeout=30)
        self.addCleanup(worker.stop, grace=0)
        wait_for(lambda: TaskExec.objects.filter(state=States.PROCESSING).count() == 2, message="2 tasks running")
        self.assert_beats(worker)
        tasks.event(self.busy).set()
        wait_for(lambda: [row(execution).state for execution in executions] == [States.SUCCEEDED] * 2)

    @override_settings(TOOSIMPLEQ_HEARTBEAT=0.05)
    def test_heartbeat_goes_on_during_the_grace_period(self):
        # Else a grace period longer than TOOSIMPLEQ_WORKER_TIMEOUT would
        # have the running tasks taken for orphans and run twice.
        execution = tasks.wait_for_event.queue(self.busy)
        worker = start(Worker(tick=60, schedules=False))
        self.addCleanup(worker.join, timeout=30)
        self.addCleanup(worker.stop, grace=0)
        wait_for(lambda: row(execution).state == States.PROCESSING, message="the task to run")
        worker.stop(grace=60)
        self.assert_beats(worker)
        tasks.event(self.busy).set()
        self.assertEqual(worker.join(timeout=30), 0)
        self.assertEqual(row(execution).state, States.SUCCEEDED)


class WorkerStatusTests(TransactionTestCase):
    def test_what_a_worker_records_of_itself(self):
        before = timezone.now()
        worker = start(Worker(threads=3, queues=["q1", "q2"], label="recorder", tick=60, schedules=False))
        status = WorkerStatus.objects.get()
        self.assertEqual(
            (status.label, status.threads, status.queues, status.pid, status.state),
            ("recorder", 3, ["q1", "q2"], os.getpid(), WorkerStatus.States.ONLINE),
        )
        self.assertTrue(status.hostname)
        self.assertGreaterEqual(status.started, before)
        self.assertIsNone(status.stopped)
        self.assertIsNone(status.exit_log)  # as upstream's: None until it stops
        worker.stop()
        self.assertEqual(worker.join(timeout=30), 0)
        status.refresh_from_db()
        self.assertEqual((status.exit_code, status.exit_log, status.state), (0, "", WorkerStatus.States.STOPPED))
        self.assertGreaterEqual(status.stopped, status.started)

    def test_a_silent_worker_is_timed_out(self):
        self.assertEqual(worker_status(silent_for=1).state, WorkerStatus.States.ONLINE)
        self.assertEqual(dead_worker().state, WorkerStatus.States.TIMEDOUT)

    def test_a_stop_that_interrupted_tasks_is_still_a_stop(self):
        status = worker_status(stopped=timezone.now(), exit_code=WorkerStatus.ExitCodes.TERMINATED)
        self.assertEqual(status.state, WorkerStatus.States.STOPPED)


class ReapingTests(TransactionTestCase):
    def test_tasks_of_a_silent_worker_are_interrupted_and_queued_again(self):
        execution = tasks.configured.using(priority=3).queue("x")  # queue "reports"
        TaskExec.objects.filter(pk=execution.pk).update(retries=2, retry_delay=5)
        dead = dead_worker()
        claim_for(dead)
        (replacement,) = recovery.reap_dead_workers()
        interrupted = row(execution)
        self.assertEqual(interrupted.state, States.INTERRUPTED)
        self.assertEqual(interrupted.error, "its worker stopped responding")
        self.assertIsNotNone(interrupted.finished)
        self.assertEqual(interrupted.replaced_by, replacement)
        replacement.refresh_from_db()
        self.assertEqual(
            (replacement.state, replacement.task_name, replacement.args, replacement.queue, replacement.priority),
            (States.QUEUED, "tests.configured", ["x"], "reports", 3),
        )
        self.assertEqual((replacement.retries, replacement.retry_delay, replacement.worker), (2, 5, None))
        self.assertEqual((interrupted.attempt, replacement.attempt), (1, 2))

    def test_a_call_interrupted_max_interruptions_times_fails_and_is_not_queued_again(self):
        # retries=-1 does not lift the limit: only interruptions count.
        tasks.retried_forever.queue()
        for _ in range(conf.MAX_INTERRUPTIONS - 1):
            claim_for(dead_worker())
            self.assertEqual(len(recovery.reap_dead_workers()), 1)
        claim_for(dead_worker())
        with self.assertLogs("django_toosimple_q", logging.ERROR) as logs:
            self.assertEqual(recovery.reap_dead_workers(), [])
        chain = list(TaskExec.objects.order_by("id"))
        self.assertEqual([execution.state for execution in chain], [States.INTERRUPTED] * 2 + [States.FAILED])
        self.assertEqual([execution.attempt for execution in chain], [1, 2, 3])
        last = chain[-1]
        self.assertEqual(
            last.error,
            "Interrupted 3 times (its worker stopped responding): not run again, TOOSIMPLEQ_MAX_INTERRUPTIONS is 3",
        )
        self.assertIsNone(last.replaced_by)
        self.assertIn(last.error, logs.output[0])

    @override_settings(TOOSIMPLEQ_MAX_INTERRUPTIONS=2)
    def test_interruptions_are_counted_across_retries_of_the_same_call(self):
        execution = tasks.retried_forever.queue()
        claim_for(dead_worker())
        (after_interruption,) = recovery.reap_dead_workers()
        # A failure in between: its retry is the same call, one more attempt.
        Worker(until_done=True, schedules=False, max_tasks=1).run()
        retry = row(after_interruption).replaced_by
        self.assertEqual((row(after_interruption).state, retry.attempt), (States.FAILED, 3))
        claim_for(dead_worker())
        self.assertEqual(recovery.reap_dead_workers(), [])
        self.assertEqual(row(retry).state, States.FAILED)
        self.assertIn("Interrupted 2 times", row(retry).error)
        # A call queued anew has its own count.
        fresh = tasks.retried_forever.queue()
        claim_for(dead_worker())
        self.assertEqual(len(recovery.reap_dead_workers()), 1)
        self.assertEqual(row(fresh).state, States.INTERRUPTED)
        self.assertEqual(row(execution).state, States.INTERRUPTED)

    def test_a_task_interrupted_before_runs_alone(self):
        # Were it what killed its worker, it would kill the tasks beside it again.
        tasks.count_running.queue()
        claim_for(dead_worker())
        (replacement,) = recovery.reap_dead_workers()
        beside = [tasks.sleep.using(priority=1).queue(0.5), tasks.count_running.using(priority=1).queue()]
        worker = Worker(threads=3, until_done=True, schedules=False)
        worker.run()
        self.assertEqual(worker.exit_code, 0)
        self.assertEqual([row(execution).state for execution in [replacement, *beside]], [States.SUCCEEDED] * 3)
        self.assertEqual(row(replacement).result, 1)  # alone
        # Beside the sleep, and the suspect claimed, waiting for them to end.
        self.assertEqual(row(beside[1]).result, 3)

    def test_a_task_held_to_run_alone_goes_back_to_the_queue_when_its_worker_stops(self):
        busy = self.id()
        self.addCleanup(tasks.event(busy).set)
        tasks.add.queue(1)
        claim_for(dead_worker())
        (suspect,) = recovery.reap_dead_workers()
        running = tasks.wait_for_event.using(priority=1).queue(busy)
        worker = start(Worker(threads=2, tick=60, schedules=False))
        wait_for(lambda: [row(running).state, row(suspect).state] == [States.PROCESSING] * 2)
        worker.stop(grace=0)
        self.assertEqual(worker.join(timeout=30), WorkerStatus.ExitCodes.TERMINATED)
        self.assertEqual(row(running).state, States.INTERRUPTED)
        # Never run: not interrupted again, only released.
        self.assertEqual((row(suspect).state, row(suspect).worker), (States.QUEUED, None))

    def test_tasks_of_a_gone_or_stopped_worker_are_queued_again(self):
        gone, stopped = tasks.add.queue(1), tasks.add.queue(2)
        claim_for(worker_status(), limit=1)
        WorkerStatus.objects.all().delete()  # the row is gone: the task's worker is NULL
        claim_for(worker_status(stopped=timezone.now(), exit_code=WorkerStatus.ExitCodes.CRASHED))
        self.assertEqual(len(recovery.reap_dead_workers()), 2)
        self.assertEqual([row(gone).state, row(stopped).state], [States.INTERRUPTED] * 2)

    def test_tasks_of_a_beating_worker_are_left_alone(self):
        execution = tasks.add.queue(1)
        claim_for(worker_status(silent_for=conf.WORKER_TIMEOUT / 2))
        self.assertEqual(recovery.reap_dead_workers(), [])
        self.assertEqual(row(execution).state, States.PROCESSING)
        self.assertEqual(TaskExec.objects.count(), 1)

    def test_after_an_outage_a_silent_worker_gets_its_full_timeout_to_beat_again(self):
        execution = tasks.add.queue(1)
        claim_for(dead_worker())
        timeout = datetime.timedelta(seconds=conf.WORKER_TIMEOUT)
        just_back = timezone.now() - timeout / 2
        self.assertEqual(recovery.reap_dead_workers(database_back=just_back), [])
        self.assertEqual(row(execution).state, States.PROCESSING)
        (replacement,) = recovery.reap_dead_workers(database_back=just_back - timeout)
        self.assertEqual(row(execution).replaced_by, replacement)

    def test_a_worker_back_from_an_outage_reaps_only_after_a_full_timeout(self):
        execution = tasks.add.queue(1)
        claim_for(dead_worker())
        worker = Worker(schedules=False)
        worker._outage = True  # what a failed step leaves
        worker.status = worker_status()
        worker._heartbeat()
        self.assertEqual(row(execution).state, States.PROCESSING)
        self.assertIsNotNone(worker._database_back)
        worker._database_back -= datetime.timedelta(seconds=conf.WORKER_TIMEOUT + 1)
        worker._heartbeat()
        self.assertEqual(row(execution).state, States.INTERRUPTED)

    def test_a_reaper_that_read_the_rows_before_another_reaped_them_queues_nothing(self):
        executions = [tasks.add.queue(i) for i in range(3)]
        claim_for(dead_worker())
        # What a second reaper read before the first one committed.
        stale = list(TaskExec.objects.filter(state=States.PROCESSING))
        self.assertEqual(len(recovery.reap_dead_workers()), 3)
        late_reaper = mock.Mock(filter=mock.Mock(return_value=stale))
        self.assertEqual(recovery.interrupt(late_reaper, reason="late"), [])
        self.assertEqual(TaskExec.objects.count(), 6)
        for execution in executions:
            self.assertEqual(row(execution).error, "its worker stopped responding")
            self.assertEqual(row(execution).replaced_by.state, States.QUEUED)

    def test_reapers_at_the_same_time_queue_one_replacement_each(self):
        # Each thread has its own connection, as separate workers would.
        reapers, orphans = 4, 20
        for _ in range(orphans):
            tasks.add.queue(1)
        claim_for(dead_worker())
        start_together = threading.Barrier(reapers, timeout=30)
        replacements, errors = [], []

        def reap():
            try:
                start_together.wait()
                replacements.extend(recovery.reap_dead_workers())
            except Exception as error:  # reported below: a thread cannot fail the test
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=reap) for _ in range(reapers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        self.assertEqual(len(replacements), orphans)
        self.assertEqual(TaskExec.objects.filter(state=States.INTERRUPTED).count(), orphans)
        self.assertEqual(TaskExec.objects.filter(state=States.QUEUED).count(), orphans)
        self.assertEqual(
            TaskExec.objects.filter(state=States.INTERRUPTED, replaced_by__state=States.QUEUED).count(), orphans
        )


class FencedFinishTests(TransactionTestCase):
    """A worker taken for dead, that comes back, cannot overwrite the outcome."""

    def come_back(self, execution):
        """Run ``execution`` in a worker that was reaped meanwhile; returns what it logged."""
        dead = dead_worker()
        (claimed,) = claim_for(dead)
        recovery.reap_dead_workers()
        with self.assertLogs("django_toosimple_q", logging.WARNING) as logs:
            executor.execute(claimed, dead.pk)
        return "\n".join(logs.output)

    def test_its_outcome_is_refused(self):
        execution = tasks.add.queue(1, b=2)
        logged = self.come_back(execution)
        self.assertIn(f"tests.add #{execution.pk} was taken from this worker before it finished", logged)
        interrupted = row(execution)
        self.assertEqual((interrupted.state, interrupted.result), (States.INTERRUPTED, None))
        # Its replacement runs, and is the one outcome.
        Worker(until_done=True, schedules=False).run()
        self.assertEqual((interrupted.replaced_by.state, interrupted.replaced_by.result), (States.SUCCEEDED, 3))

    def test_its_retry_is_not_queued(self):
        execution = tasks.retried.queue()  # fails, with retries left
        self.come_back(execution)
        self.assertEqual(row(execution).state, States.INTERRUPTED)
        self.assertEqual(TaskExec.objects.count(), 2)  # the task and its replacement; no retry


class GracefulStopTests(TransactionTestCase):
    def setUp(self):
        self.finish = self.id()
        self.addCleanup(tasks.event(self.finish).set)

    def start_running(self, threads=1):
        """A worker running ``threads`` tasks that wait for the event ``self.finish``."""
        executions = [tasks.wait_for_event.queue(self.finish) for _ in range(threads)]
        waiting = tasks.add.using(priority=-1).queue(1)
        worker = start(Worker(threads=threads, tick=0.05, schedules=False))
        self.addCleanup(worker.join, timeout=30)
        self.addCleanup(worker.stop, grace=0)
        wait_for(
            lambda: TaskExec.objects.filter(state=States.PROCESSING).count() == threads, message="the tasks to run"
        )
        return worker, executions, waiting

    def test_running_tasks_that_end_within_the_grace_succeed(self):
        worker, executions, waiting = self.start_running(threads=2)
        worker.stop(grace=60)
        tasks.event(self.finish).set()
        self.assertEqual(worker.join(timeout=30), 0)
        self.assertEqual([row(execution).state for execution in executions], [States.SUCCEEDED] * 2)
        self.assertEqual(row(waiting).state, States.QUEUED)  # a stopping worker claims nothing

    def test_tasks_running_when_the_grace_ends_are_interrupted_and_queued_again(self):
        worker, (execution,), _ = self.start_running()
        worker.stop(grace=0.1)
        self.assertEqual(worker.join(timeout=30), WorkerStatus.ExitCodes.TERMINATED)
        interrupted = row(execution)
        self.assertEqual(interrupted.state, States.INTERRUPTED)
        self.assertEqual(interrupted.error, "its worker stopped before it finished")
        self.assertEqual(interrupted.replaced_by.state, States.QUEUED)
        status = WorkerStatus.objects.get()
        self.assertEqual((status.exit_code, status.state), (77, WorkerStatus.States.STOPPED))
        # The abandoned thread ends later: its outcome is refused.
        tasks.event(self.finish).set()
        wait_for(lambda: worker.running_count == 0, message="the abandoned task to end")
        self.assertEqual(row(execution).state, States.INTERRUPTED)

    def test_a_second_stop_shortens_the_grace(self):
        worker, (execution,), _ = self.start_running()
        worker.stop(grace=600)
        worker.stop(grace=0)
        self.assertEqual(worker.join(timeout=30), WorkerStatus.ExitCodes.TERMINATED)
        self.assertEqual(row(execution).state, States.INTERRUPTED)


def failing_first(function, times, error=None):
    """``function``, raising ``error`` (a lost connection) at its first ``times`` calls."""
    calls = iter(range(times))
    error = error or OperationalError("server closed the connection unexpectedly")

    def failing(*args, **kwargs):
        if next(calls, None) is not None:
            raise error
        return function(*args, **kwargs)

    return failing


class DatabaseErrorTests(TransactionTestCase):
    def test_the_loop_backs_off_and_carries_on(self):
        executions = [tasks.add.queue(i) for i in range(3)]
        with (
            mock.patch.object(store, "finish_and_claim", failing_first(store.finish_and_claim, 3)),
            self.assertLogs("django_toosimple_q", logging.WARNING) as logs,
        ):
            worker = Worker(until_done=True, schedules=False)
            worker.run()
        self.assertEqual(worker.exit_code, 0)
        self.assertEqual([row(execution).state for execution in executions], [States.SUCCEEDED] * 3)
        retries = [line for line in logs.output if "database error (server closed the connection" in line]
        self.assertEqual(len(retries), 3)

    def test_an_error_no_retry_can_mend_stops_the_worker(self):
        tasks.add.queue(1)
        error = OperationalError("cannot start a transaction within a transaction")
        with mock.patch.object(store, "finish_and_claim", failing_first(store.finish_and_claim, 1, error)):
            worker = Worker(until_done=True, schedules=False)
            worker.run()
        self.assertEqual(worker.exit_code, WorkerStatus.ExitCodes.CRASHED)
        self.assertIn("within a transaction", WorkerStatus.objects.get(pk=worker.status.pk).exit_log)

    def test_a_registration_the_database_refuses_stops_the_worker(self):
        refused = DataError("value too long for type character varying(1024)")
        with (
            mock.patch.object(Worker, "_register", side_effect=refused),
            self.assertLogs("django_toosimple_q", logging.ERROR) as logs,
        ):
            worker = Worker(until_done=True, schedules=False)
            self.assertEqual(worker.run(), WorkerStatus.ExitCodes.CRASHED)
        self.assertIn("cannot register: value too long", logs.output[0])

    def drain_while_failing(self, name, failures):
        """Run a task while ``store.<name>`` fails at its first ``failures`` calls, the database away.

        Checks that its outcome is stored once the database is back; returns the task and the warnings logged.
        """
        execution = tasks.add.queue(1, b=1)
        with (
            mock.patch.object(store, name, failing_first(getattr(store, name), failures)),
            self.assertLogs("django_toosimple_q", logging.WARNING) as logs,
        ):
            worker = Worker(until_done=True, schedules=False)
            worker.run()
        self.assertEqual((row(execution).state, row(execution).result), (States.SUCCEEDED, 2))
        self.assertEqual(worker.exit_code, 0)
        return execution, logs.output

    def test_an_outcome_is_stored_once_the_database_is_back(self):
        # Written with the loop's next claim (SQLite), tried again as any
        # claim; or by a pool thread, first with others, then alone.
        _, warnings = self.drain_while_failing("_finish_params", 3)
        retries = [line for line in warnings if "(server closed the connection unexpectedly)" in line]
        self.assertEqual(len(retries), 3 if connection.vendor == "sqlite" else 2, warnings)

    @override_settings(TOOSIMPLEQ_FINISH_BATCH=1)
    def test_an_outcome_stored_by_its_own_thread_is_stored_once_the_database_is_back(self):
        execution, warnings = self.drain_while_failing("finish_many", 2)
        retries = [line for line in warnings if f"could not store the outcome of tests.add #{execution.pk}" in line]
        self.assertEqual(len(retries), 2)

    def test_an_outcome_not_stored_by_the_grace_end_is_given_another_run(self):
        execution = tasks.add.queue(1)
        never = failing_first(store._finish_params, 10**6)
        with mock.patch.object(store, "_finish_params", never), self.assertLogs("django_toosimple_q", logging.WARNING):
            worker = start(Worker(schedules=False, tick=0.05))
            wait_for(lambda: row(execution).state == States.PROCESSING, message="the task to run")
            worker.stop(grace=0.2)
            worker.join(timeout=30)
        # Interrupted by the stopping worker, or, when its thread gave up
        # first, by the next reaper: the worker's row says it stopped.
        recovery.reap_dead_workers()
        self.assertEqual(row(execution).state, States.INTERRUPTED)
        self.assertEqual(row(execution).replaced_by.state, States.QUEUED)


class CrashTests(TransactionTestCase):
    def test_an_error_in_the_loop_records_crashed_with_its_traceback(self):
        with (
            mock.patch.object(Worker, "_poll", side_effect=RuntimeError("a bug in the loop")),
            self.assertLogs("django_toosimple_q", logging.ERROR),
        ):
            worker = Worker(schedules=False)
            self.assertEqual(worker.run(), WorkerStatus.ExitCodes.CRASHED)
        status = WorkerStatus.objects.get()
        self.assertEqual((status.exit_code, status.state), (99, WorkerStatus.States.CRASHED))
        self.assertIn("Traceback (most recent call last)", status.exit_log)
        self.assertIn("RuntimeError: a bug in the loop", status.exit_log)
        self.assertIsNotNone(status.stopped)


class CommandExitTests(TransactionTestCase):
    """What ``manage.py worker`` does with its worker's exit code and with signals."""

    def call_worker(self, *args, signal_module=None):
        """Run the command with a fake signal module; returns the handlers it set."""
        handlers = {}
        fake = signal_module or types.SimpleNamespace(SIGINT=2, SIGTERM=15)
        fake.signal = lambda signum, handler: handlers.__setitem__(signum, handler)
        with mock.patch.object(worker_command, "signal", fake):
            call_command("worker", "--no_schedules", *args)
        return handlers

    def test_an_exit_with_tasks_still_running_does_not_wait_for_their_threads(self):
        # The interpreter would join the pool's threads before exiting, that
        # is wait for the very tasks the grace period gave up on.
        for exit_code in (WorkerStatus.ExitCodes.TERMINATED, WorkerStatus.ExitCodes.CRASHED):
            with (
                self.subTest(exit_code),
                mock.patch.object(Worker, "run", return_value=exit_code),
                mock.patch("logging.shutdown"),  # as the exit would: not to do in the test run
                mock.patch.object(worker_loop.os, "_exit", side_effect=SystemExit) as exit,
                self.assertRaises(SystemExit),
            ):
                self.call_worker()
            exit.assert_called_once_with(exit_code)

    def test_a_clean_exit_returns(self):
        with mock.patch.object(worker_loop.os, "_exit") as exit:
            self.call_worker("--until_done")
        exit.assert_not_called()

    def test_first_signal_stops_gracefully_and_the_second_at_once(self):
        stops = []
        stopped = threading.Semaphore(0)

        def record_stop(worker, grace=None):
            stops.append(grace)
            stopped.release()

        with mock.patch.object(Worker, "stop", record_stop):
            handlers = self.call_worker("--until_done")
            for expected in ([None], [None, 0]):
                handlers[15](15, None)
                self.assertTrue(stopped.acquire(timeout=10))
                self.assertEqual(stops, expected)

    def test_the_worker_starts_without_posix_signals(self):
        # As on Windows: no SIGTERM to be sent; Ctrl-C and Ctrl-Break.
        windows = types.SimpleNamespace(SIGINT=2, SIGBREAK=21)
        execution = tasks.add.queue(1)
        self.assertEqual(sorted(self.call_worker("--until_done", signal_module=windows)), [2, 21])
        self.assertEqual(row(execution).state, States.SUCCEEDED)
        only_ctrl_c = types.SimpleNamespace(SIGINT=2)
        self.assertEqual(sorted(self.call_worker("--until_done", signal_module=only_ctrl_c)), [2])
