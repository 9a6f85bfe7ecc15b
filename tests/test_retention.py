"""Retention: ``manage.py prune_tasks``, and TOOSIMPLEQ_RETENTION run by the workers."""

import datetime
import io
import threading

from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q import registry, retention
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus, prune_executions
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler

from .helpers import IsolatedRegistries
from .testapp import tasks

States = TaskExec.States
DAY = datetime.timedelta(days=1)


def rows(count, *, days_ago, state=States.SUCCEEDED, queue="default", **fields):
    """``count`` executions that ended ``days_ago`` days ago (waiting ones: created then)."""
    when = timezone.now() - days_ago * DAY
    finished = when if state in TaskExec.FINISHED_STATES else None
    return TaskExec.objects.bulk_create(
        [
            TaskExec(task_name="tests.add", state=state, queue=queue, created=when, finished=finished, **fields)
            for _ in range(count)
        ],
        batch_size=500,
    )


def chain(*links, days_ago):
    """A call's runs, the first one first: each (state) replaced by the next."""
    runs = []
    for state in reversed(links):
        (run,) = rows(1, days_ago=days_ago, state=state, replaced_by=runs[0] if runs else None)
        runs.insert(0, run)
    return runs


def exists(execution):
    return TaskExec.objects.filter(pk=execution.pk).exists()


def prune(*args):
    out = io.StringIO()
    call_command("prune_tasks", *args, stdout=out)
    return out.getvalue().strip()


class PruneCommandTests(TransactionTestCase):
    def test_deletes_old_finished_calls_and_keeps_the_rest(self):
        old = rows(3, days_ago=10) + rows(2, days_ago=10, state=States.FAILED)
        recent = rows(2, days_ago=1)
        waiting = rows(1, days_ago=30, state=States.QUEUED) + rows(1, days_ago=30, state=States.SLEEPING)
        running = rows(1, days_ago=30, state=States.PROCESSING)
        output = prune("--older-than", "7d")
        self.assertEqual(output, "deleted 5 execution(s) (FAILED: 2, SUCCEEDED: 3) and 0 stopped worker(s)")
        self.assertFalse(any(exists(execution) for execution in old))
        self.assertTrue(all(exists(execution) for execution in recent + waiting + running))

    def test_a_call_goes_whole_or_not_at_all(self):
        ended = chain(States.INTERRUPTED, States.FAILED, States.SUCCEEDED, days_ago=10)
        retry_waiting = chain(States.FAILED, States.SLEEPING, days_ago=10)
        retried_lately = chain(States.FAILED, States.SUCCEEDED, days_ago=10)
        TaskExec.objects.filter(pk=retried_lately[-1].pk).update(finished=timezone.now())
        prune("--older-than", "7d")
        self.assertEqual([exists(run) for run in ended], [False] * 3)
        self.assertEqual([exists(run) for run in retry_waiting + retried_lately], [True] * 4)

    def test_state_and_queue_choose_calls_by_their_outcome(self):
        failed_after_retry = chain(States.FAILED, States.FAILED, days_ago=10)
        succeeded_after_retry = chain(States.FAILED, States.SUCCEEDED, days_ago=10)
        elsewhere = rows(1, days_ago=10, state=States.FAILED, queue="reports")
        output = prune("--older-than", "7d", "--state", "FAILED", "--queue", "default")
        self.assertEqual(output, "deleted 2 execution(s) (FAILED: 2) and 0 stopped worker(s)")
        self.assertEqual([exists(run) for run in failed_after_retry], [False, False])
        self.assertTrue(all(exists(run) for run in succeeded_after_retry + elsewhere))

    def test_dry_run_deletes_nothing(self):
        old = rows(3, days_ago=10)
        self.assertEqual(
            prune("--older-than", "7d", "--dry-run"),
            "would delete 3 execution(s) (SUCCEEDED: 3) and 0 stopped worker(s)",
        )
        self.assertTrue(all(exists(execution) for execution in old))

    def test_a_schedules_last_task_is_cleared(self):
        (last,) = rows(1, days_ago=10)
        schedule = ScheduleExec.objects.create(name="nightly", last_task=last)
        prune("--older-than", "7d")
        schedule.refresh_from_db()
        self.assertIsNone(schedule.last_task)

    def test_stopped_and_long_silent_workers_go_and_their_executions_stay(self):
        long_ago = timezone.now() - 10 * DAY
        fields = {"hostname": "h", "pid": 1}
        stopped = WorkerStatus.objects.create(label="stopped", stopped=long_ago, last_tick=long_ago, **fields)
        WorkerStatus.objects.create(label="silent", last_tick=long_ago, **fields)
        WorkerStatus.objects.create(label="online", **fields)
        WorkerStatus.objects.create(label="lately", stopped=timezone.now(), **fields)
        (execution,) = rows(1, days_ago=1, worker=stopped)
        self.assertIn("and 2 stopped worker(s)", prune("--older-than", "7d"))
        self.assertEqual(sorted(WorkerStatus.objects.values_list("label", flat=True)), ["lately", "online"])
        self.assertIsNone(TaskExec.objects.get(pk=execution.pk).worker)

    def test_an_age_it_cannot_read_is_refused(self):
        for age in ("7", "7 days", "-1d", "0s"):
            with self.subTest(age=age), self.assertRaises(CommandError):
                prune("--older-than", age)

    def test_100000_rows_pruned_in_short_transactions_while_the_queue_is_used(self):
        rows(60_000, days_ago=10)
        for _ in range(2_000):
            chain(States.FAILED, States.SUCCEEDED, days_ago=10)
        keep = rows(30_000, days_ago=1) + rows(100, days_ago=30, state=States.QUEUED)
        kept_chain = chain(States.FAILED, States.SUCCEEDED, days_ago=10)
        TaskExec.objects.filter(pk=kept_chain[-1].pk).update(finished=timezone.now())
        self.assertEqual(TaskExec.objects.count(), 94_102)
        # Meanwhile another connection queues tasks: it gets its turn between batches.
        done, queued, errors = threading.Event(), [], []

        def queue_meanwhile():
            try:
                while not done.is_set():
                    queued.append(tasks.add.queue(1, b=1))
            except Exception as error:  # reported below: a thread cannot fail the test
                errors.append(error)
            finally:
                connection.close()

        writer = threading.Thread(target=queue_meanwhile)
        writer.start()
        try:
            output = prune("--older-than", "7d")
        finally:
            done.set()
            writer.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(queued), 0)
        self.assertEqual(output, "deleted 64000 execution(s) (FAILED: 2000, SUCCEEDED: 62000) and 0 stopped worker(s)")
        self.assertEqual(TaskExec.objects.count(), 30_102 + len(queued))
        self.assertEqual(TaskExec.objects.filter(pk__in=[row.pk for row in keep + kept_chain]).count(), 30_102)


class AutomaticRetentionTests(IsolatedRegistries, TransactionTestCase):
    def register(self):
        retention.register_if_configured()
        return registry.schedules_registry[retention.TASK_NAME]

    @override_settings(TOOSIMPLEQ_RETENTION={"SUCCEEDED": "7d", "FAILED": datetime.timedelta(days=30)})
    def test_each_state_is_kept_its_age(self):
        gone = rows(2, days_ago=10) + rows(1, days_ago=40, state=States.FAILED)
        kept = rows(1, days_ago=1) + rows(1, days_ago=10, state=States.FAILED)
        kept += rows(1, days_ago=40, state=States.CANCELLED)
        self.register()
        outcome = retention.apply_retention()
        self.assertEqual(outcome["executions"], {"SUCCEEDED": 2, "FAILED": 1})
        self.assertFalse(any(exists(execution) for execution in gone))
        self.assertTrue(all(exists(execution) for execution in kept))

    @override_settings(TOOSIMPLEQ_RETENTION={"SUCCEEDED": "7d"}, TOOSIMPLEQ_RETENTION_CRON="0 * * * *")
    def test_workers_run_it_once_per_interval_however_many_they_are(self):
        self.register()
        hour = timezone.now().replace(minute=0, second=0, microsecond=0)
        schedulers = [Scheduler(QueueFilter()) for _ in range(3)]
        schedulers[0].sync(now=hour - datetime.timedelta(minutes=30))
        queued = [scheduler.run_due(now=hour + datetime.timedelta(minutes=1)) for scheduler in schedulers]
        self.assertEqual(sum(len(executions) for executions in queued), 1)
        rows(5, days_ago=10)
        Worker(until_done=True, schedules=False).run()
        (run,) = TaskExec.objects.filter(task_name=retention.TASK_NAME)
        self.assertEqual(run.state, States.SUCCEEDED)
        self.assertEqual(run.result, {"executions": {"SUCCEEDED": 5}, "workers": 0})

    def test_off_by_default(self):
        retention.register_if_configured()
        self.assertNotIn(retention.TASK_NAME, registry.tasks_registry)

    @override_settings(TOOSIMPLEQ_RETENTION={"DONE": "7d"})
    def test_a_state_that_never_ends_a_call_is_refused(self):
        with self.assertRaisesMessage(ImproperlyConfigured, "'DONE' is not a finished state"):
            retention.register_if_configured()

    def test_prune_executions_takes_any_finished_state(self):
        (cancelled,) = rows(1, days_ago=10, state=States.CANCELLED)
        self.assertEqual(prune_executions(timezone.now(), states=["CANCELLED"]), {"CANCELLED": 1})
        self.assertFalse(exists(cancelled))
