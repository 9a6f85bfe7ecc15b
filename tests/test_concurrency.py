"""Several workers and threads at once: each task runs once, nothing crashes or leaks."""

import signal
import time
import uuid
from unittest import skipUnless

from django.db import connection, transaction
from django.test import TransactionTestCase

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import Worker

from .helpers import start_worker, wait_for
from .testapp import tasks
from .testapp.models import Execution

States = TaskExec.States


class WorkerProcessesTestCase(TransactionTestCase):
    def start_worker(self, *args, env=None):
        """A worker subprocess, killed at the end of the test if still running."""
        # Log level WARNING: an error the worker logs shows its traceback.
        env = {"TOOSIMPLEQ_TEST_LOG_LEVEL": "WARNING", **(env or {})}
        process = start_worker("--no_schedules", "--tick", "0.1", *args, env=env)

        def kill():
            if process.poll() is None:
                process.kill()
                process.communicate()

        self.addCleanup(kill)
        return process

    def stop_worker(self, process):
        """Stop it as a service manager would (SIGTERM); returns its stderr."""
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, 0, stderr)
        self.assertNotIn("Traceback", stderr)
        return stderr

    def queue_records(self, count):
        # One transaction: the workers find all of them at once.
        with transaction.atomic():
            return [tasks.record.queue(f"task {i}") for i in range(count)]

    def wait_until_finished(self, count, timeout=120):
        finished = TaskExec.objects.filter(state__in=TaskExec.FINISHED_STATES)
        wait_for(lambda: finished.count() >= count, timeout=timeout, interval=0.1, message=f"{count} tasks to finish")


class ExactlyOnceTests(WorkerProcessesTestCase):
    def test_two_processes_of_four_threads_run_each_task_exactly_once(self):
        count = 500
        workers = [self.start_worker("--threads", "4", "--label", f"worker {i}") for i in range(2)]
        # Both are up before there is work, so that they compete for it.
        wait_for(lambda: WorkerStatus.objects.count() == 2, timeout=60, message="both workers to start")
        self.queue_records(count)
        self.wait_until_finished(count)
        for process in workers:
            self.stop_worker(process)

        self.assertEqual(TaskExec.objects.count(), count)  # no retry, no replacement
        self.assertEqual(TaskExec.objects.filter(state=States.SUCCEEDED).count(), count)
        # A second run of any task would have left a row of its own.
        self.assertEqual(Execution.objects.count(), count)
        self.assertEqual(set(Execution.objects.values_list("key", flat=True)), {f"task {i}" for i in range(count)})
        per_worker = {
            status.label: TaskExec.objects.filter(worker=status).count() for status in WorkerStatus.objects.all()
        }
        self.assertEqual(sum(per_worker.values()), count)
        self.assertTrue(all(per_worker.values()), f"a worker ran nothing: {per_worker}")
        self.assertEqual(set(WorkerStatus.objects.values_list("exit_code", flat=True)), {0})


class ThreadsTests(TransactionTestCase):
    def test_eight_threads_run_eight_one_second_tasks_in_under_four_seconds(self):
        executions = [tasks.sleep.queue(1) for _ in range(8)]
        start = time.monotonic()
        Worker(threads=8, until_done=True, schedules=False).run()
        elapsed = time.monotonic() - start
        self.assertEqual(
            [TaskExec.objects.get(pk=execution.pk).state for execution in executions], [States.SUCCEEDED] * 8
        )
        self.assertLess(elapsed, 4)


@skipUnless(connection.vendor == "postgresql", "counts PostgreSQL backends")
class ConnectionLeakTests(WorkerProcessesTestCase):
    def test_worker_holds_at_most_threads_plus_two_connections(self):
        threads = 8
        # libpq names the worker's sessions: pg_stat_activity tells them apart.
        application_name = f"toosimpleq-leak-{uuid.uuid4().hex[:12]}"
        process = self.start_worker("--threads", str(threads), env={"PGAPPNAME": application_name})
        wait_for(lambda: WorkerStatus.objects.exists(), timeout=60, message="the worker to start")
        self.queue_records(200)
        self.wait_until_finished(200)

        def backends():
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name])
                return cursor.fetchone()[0]

        # Idle, and still running.
        self.assertEqual(TaskExec.objects.exclude(state=States.SUCCEEDED).count(), 0)
        self.assertIsNone(process.poll())
        held = backends()
        self.assertGreaterEqual(held, 1)  # the query does see the worker's sessions
        self.assertLessEqual(held, threads + 2)
        self.stop_worker(process)
        wait_for(lambda: backends() == 0, timeout=30, message="the stopped worker's sessions to close")
