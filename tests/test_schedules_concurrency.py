"""Exactly once: many worker processes evaluating the same schedule at once.

Eight `manage.py worker` processes run the every-second schedule of
tests/scheduleapp (catch_up=True, so no occurrence may be skipped either),
each polling five times a second, for 60 due times after they are all up
(about a minute). Every due time must have been queued exactly once: the
compare-and-set on ScheduleExec.last_due decides between them. It runs on
the database of the suite's run: SQLite or PostgreSQL.
"""

import datetime
import signal
from collections import Counter

from django.test import TransactionTestCase

from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus

from .helpers import start_worker, wait_for

WORKERS = 8
DUE_TIMES = 60
TASK = "scheduleapp.every_second"


def queued_count():
    return TaskExec.objects.filter(task_name=TASK).count()


class ExactlyOnceTests(TransactionTestCase):
    def test_each_due_time_is_queued_once_by_eight_workers(self):
        workers = [
            start_worker(
                "--queue", "every_second", "--tick", "0.2", "--threads", "2", "--label", f"scheduler-{number}",
                env={"TOOSIMPLEQ_TEST_SCHEDULE_APP": "1"},
            )
            for number in range(WORKERS)
        ]
        try:
            # Counted from when all of them are evaluating the schedule.
            wait_for(lambda: WorkerStatus.objects.count() == WORKERS, timeout=60, message="the workers to start")
            start = queued_count()
            wait_for(
                lambda: queued_count() >= start + DUE_TIMES,
                timeout=DUE_TIMES * 3,
                interval=0.5,
                message=f"{DUE_TIMES} due times",
            )
        finally:
            for worker in workers:
                worker.send_signal(signal.SIGTERM)
            outputs = [worker.communicate(timeout=90) for worker in workers]
        for worker, (_, stderr) in zip(workers, outputs):
            self.assertEqual(worker.returncode, 0, stderr)

        due_times = Counter(
            execution.kwargs["when"] for execution in TaskExec.objects.filter(task_name=TASK)
        )
        duplicates = {due: count for due, count in due_times.items() if count > 1}
        self.assertEqual(duplicates, {}, "due times queued more than once")
        ordered = sorted(due_times)
        self.assertGreaterEqual(len(ordered), DUE_TIMES)
        missed = [
            earlier + datetime.timedelta(seconds=1)
            for earlier, later in zip(ordered, ordered[1:])
            if later - earlier != datetime.timedelta(seconds=1)
        ]
        self.assertEqual(missed, [], "due times never queued")
        self.assertEqual(ScheduleExec.objects.get(name=TASK).last_due, ordered[-1])
