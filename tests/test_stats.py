"""Queue statistics: the figures of stats.collect() and their fixed number of queries."""

import datetime

from django.test import TestCase, override_settings

from django_toosimple_q import stats
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus

from .test_schedules import RegistryIsolation, utc

NOW = utc(2026, 11, 30, 12, 0)
States = TaskExec.States


def execution(queue="default", state=States.QUEUED, *, created=NOW, finished=None):
    return TaskExec.objects.create(
        task_name="stats.task", queue=queue, state=state, created=created, due=created, finished=finished
    )


def worker(label, *, queues=(), excluded=(), last_tick=NOW, stopped=None, **fields):
    return WorkerStatus.objects.create(
        label=label, hostname="host", pid=1, queues=list(queues), excluded_queues=list(excluded),
        last_tick=last_tick, stopped=stopped, **fields,
    )


def by_name(snapshot):
    return {queue.name: queue for queue in snapshot.queues}


class QueueStatsTests(TestCase):
    def test_counts_the_waiting_and_running_states_of_every_queue(self):
        for state in (States.QUEUED, States.QUEUED, States.SLEEPING, States.PROCESSING):
            execution("default", state)
        execution("default", States.CANCELLED, finished=NOW - datetime.timedelta(minutes=1))
        execution("mail", States.PROCESSING)

        queues = by_name(stats.collect(NOW))

        self.assertEqual(sorted(queues), ["default", "mail"])
        self.assertEqual(
            queues["default"].counts, {States.SLEEPING: 1, States.QUEUED: 2, States.PROCESSING: 1}
        )  # every live state, zero or not; the finished ones are counted by window
        self.assertEqual(queues["default"].waiting, 3)
        self.assertEqual(queues["mail"].counts, {States.SLEEPING: 0, States.QUEUED: 0, States.PROCESSING: 1})
        self.assertEqual(queues["mail"].waiting, 0)

    def test_the_history_is_not_counted(self):
        # Ended before the longest window: the history, which only grows, is read by no figure.
        long_ago = NOW - datetime.timedelta(minutes=stats.RECENT_WINDOWS[-1] + 1)
        for state in TaskExec.FINISHED_STATES:
            execution("default", state, created=long_ago, finished=long_ago)
        execution("default", States.QUEUED)
        execution("history only", States.SUCCEEDED, created=long_ago, finished=long_ago)

        queues = by_name(stats.collect(NOW))

        self.assertEqual(sorted(queues), ["default"])
        self.assertEqual(queues["default"].counts[States.QUEUED], 1)
        self.assertEqual(
            queues["default"].ended_recently,
            {window: dict.fromkeys(TaskExec.FINISHED_STATES, 0) for window in stats.RECENT_WINDOWS},
        )

    def test_oldest_waiting_is_measured_from_created(self):
        execution("default", States.QUEUED, created=NOW - datetime.timedelta(minutes=3))
        execution("default", States.SLEEPING, created=NOW - datetime.timedelta(minutes=7))
        execution("default", States.PROCESSING, created=NOW - datetime.timedelta(hours=5))  # not waiting
        execution("done", States.SUCCEEDED, created=NOW - datetime.timedelta(hours=5), finished=NOW)

        queues = by_name(stats.collect(NOW))

        self.assertEqual(queues["default"].oldest_waiting, NOW - datetime.timedelta(minutes=7))
        self.assertEqual(queues["default"].oldest_waiting_age, datetime.timedelta(minutes=7))
        self.assertIsNone(queues["done"].oldest_waiting)
        self.assertIsNone(queues["done"].oldest_waiting_age)

    def test_ended_by_state_and_finished_and_failed_in_the_last_5_and_60_minutes(self):
        minutes_ago = lambda minutes: NOW - datetime.timedelta(minutes=minutes)  # noqa: E731
        execution("default", States.SUCCEEDED, finished=minutes_ago(1))
        execution("default", States.FAILED, finished=minutes_ago(2))
        execution("default", States.SUCCEEDED, finished=minutes_ago(30))
        execution("default", States.FAILED, finished=minutes_ago(59))
        execution("default", States.CANCELLED, finished=minutes_ago(59))
        execution("default", States.INTERRUPTED, finished=minutes_ago(59))
        execution("default", States.FAILED, finished=minutes_ago(61))  # too old for both
        execution("quiet", States.INVALID, finished=minutes_ago(10))

        queues = by_name(stats.collect(NOW))

        ended = {window: {state: count for state, count in by_state.items() if count}
                 for window, by_state in queues["default"].ended_recently.items()}
        self.assertEqual(ended, {
            5: {States.SUCCEEDED: 1, States.FAILED: 1},
            60: {States.SUCCEEDED: 2, States.FAILED: 2, States.CANCELLED: 1, States.INTERRUPTED: 1},
        })
        self.assertEqual(queues["default"].finished_recently, {5: 2, 60: 6})
        self.assertEqual(queues["default"].failed_recently, {5: 1, 60: 2})
        self.assertEqual(queues["quiet"].finished_recently, {5: 0, 60: 1})
        self.assertEqual(queues["quiet"].failed_recently, {5: 0, 60: 0})

    @override_settings(TOOSIMPLEQ_WORKER_TIMEOUT=60)
    def test_workers_online_per_queue(self):
        execution("default")
        execution("mail")
        execution("reports")
        worker("all")
        worker("mail only", queues=["mail"])
        worker("all but reports", excluded=["reports"])
        worker("stopped", stopped=NOW)
        worker("silent", last_tick=NOW - datetime.timedelta(seconds=61))
        worker("silent, but patient", last_tick=NOW - datetime.timedelta(seconds=61), queues=["mail"],
               timeout=datetime.timedelta(seconds=90))  # worker --timeout 90
        worker("named queue without rows", queues=["idle"])

        snapshot = stats.collect(NOW)
        online = {queue.name: queue.workers_online for queue in snapshot.queues}

        self.assertEqual(online, {"default": 2, "mail": 4, "reports": 1, "idle": 3})
        self.assertEqual(snapshot.workers_online, 5)
        self.assertEqual(by_name(snapshot)["idle"].counts[States.QUEUED], 0)
        self.assertEqual(by_name(snapshot)["idle"].finished_recently, {5: 0, 60: 0})

    def test_run_time_p50_and_p95_of_the_last_hour(self):
        # Twenty runs: 18 of 0.1 s, then 0.4 s and 20 s; one from before the hour, one that never ran.
        for seconds in [0.1] * 18 + [0.4, 20]:
            run = execution("default", States.SUCCEEDED, finished=NOW - datetime.timedelta(minutes=1))
            TaskExec.objects.filter(pk=run.pk).update(started=run.finished - datetime.timedelta(seconds=seconds))
        old = execution("default", States.FAILED, finished=NOW - datetime.timedelta(minutes=61))
        TaskExec.objects.filter(pk=old.pk).update(started=old.finished - datetime.timedelta(hours=2))
        execution("default", States.CANCELLED, finished=NOW)
        execution("idle", States.QUEUED)

        queues = by_name(stats.collect(NOW))

        self.assertEqual((queues["default"].run_time_p50, queues["default"].run_time_p95), (0.1, 0.5))
        self.assertEqual((queues["idle"].run_time_p50, queues["idle"].run_time_p95), (None, None))
        self.assertEqual(stats.percentile([0, 0, 1], 0.5), stats.RUN_TIME_BUCKETS[2])

    def test_nothing_at_all(self):
        snapshot = stats.collect(NOW)
        self.assertEqual(snapshot.queues, ())
        self.assertEqual(snapshot.next_schedules, ())
        self.assertEqual(snapshot.taken_at, NOW)

    def test_a_fixed_number_of_queries_however_many_queues(self):
        worker("all")
        stats.collect(NOW)  # the content type cache and the like, once
        with self.assertNumQueries(6):
            stats.collect(NOW)
        for number in range(20):
            execution(f"queue{number}", States.SUCCEEDED, finished=NOW)
            execution(f"queue{number}", States.QUEUED)
            worker(f"worker{number}", queues=[f"queue{number}"])
        with self.assertNumQueries(6):
            self.assertEqual(len(stats.collect(NOW).queues), 20)


class NextSchedulesTests(RegistryIsolation, TestCase):
    def test_soonest_first_with_overdue_marked_and_manual_left_out(self):
        self.add_schedule("0 * * * *", name="hourly")
        self.add_schedule("30 8 * * *", name="daily")
        self.add_schedule("*/5 * * * *", name="late")
        self.add_schedule("manual", name="by hand")
        self.add_schedule("@daily", name="first run")
        ScheduleExec.objects.create(name="hourly", cron="0 * * * *", last_due=utc(2026, 11, 30, 12, 0))
        ScheduleExec.objects.create(name="daily", cron="30 8 * * *", last_due=utc(2026, 11, 30, 8, 30))
        ScheduleExec.objects.create(name="late", cron="*/5 * * * *", last_due=utc(2026, 11, 30, 11, 0))
        ScheduleExec.objects.create(name="by hand", cron="manual", last_due=utc(2026, 11, 1))
        ScheduleExec.objects.create(name="first run", cron="@daily", last_due=None)  # last_run=None
        ScheduleExec.objects.create(name="gone", cron="* * * * *", state=ScheduleExec.States.INVALID)

        upcoming = stats.collect(NOW).next_schedules

        self.assertEqual(
            [(schedule.name, schedule.next_due, schedule.overdue) for schedule in upcoming],
            [
                ("late", utc(2026, 11, 30, 11, 5), True),
                ("first run", NOW, False),
                ("hourly", utc(2026, 11, 30, 13, 0), False),
                ("daily", utc(2026, 12, 1, 8, 30), False),
            ],
        )

    def test_schedule_limit(self):
        for minute in range(5):
            self.add_schedule(f"{minute} * * * *", name=f"at {minute}")
            ScheduleExec.objects.create(name=f"at {minute}", cron=f"{minute} * * * *", last_due=NOW)
        upcoming = stats.collect(NOW, schedule_limit=2).next_schedules
        self.assertEqual([schedule.name for schedule in upcoming], ["at 1", "at 2"])
