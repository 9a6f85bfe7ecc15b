"""Code written for upstream django-toosimple-q 1.x runs unchanged.

The examples of upstream's README, and the calls its users make, against
this package. The database side (an upstream database migrated) is in
test_upstream_migration.
"""

import datetime
import functools
import os

import time_machine
from django.apps import apps
from django.core.management import call_command
from django.db.migrations.recorder import MigrationRecorder
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings
from django.utils import timezone

from django_toosimple_q.apps import DjangoToosimpleQConfig
from django_toosimple_q.checks import check_upstream_history
from django_toosimple_q.decorators import register_task, schedule_task
from django_toosimple_q.migrations import UPSTREAM_MIGRATIONS
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import schedules_registry, tasks_registry
from django_toosimple_q.worker import recovery
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler

from .helpers import IsolatedRegistries
from .testapp import tasks

States = TaskExec.States


class ReadmeTests(IsolatedRegistries, TransactionTestCase):
    """Upstream's README, example by example."""

    def test_quickstart(self):
        @register_task(name="compat.my_task")
        def my_task(name):
            return f"Hello {name} !"

        first = my_task.queue("John")
        my_task.queue("Peter")
        self.assertEqual(my_task("Jane"), "Hello Jane !")
        call_command("worker", "--until_done")
        first.refresh_from_db()
        self.assertEqual((first.state, first.result), (States.SUCCEEDED, "Hello John !"))

    def test_the_result_example(self):
        @register_task(name="compat.multiply")
        def multiply(a, b):
            return a * b

        t = multiply.queue(3, 4)
        assert t.state == TaskExec.States.QUEUED
        assert t.result is None
        call_command("worker", "--until_done")
        t.refresh_from_db()
        assert t.state == TaskExec.States.SUCCEEDED
        assert t.result == 12

    def test_priorities_unique_and_queues(self):
        order = []

        @register_task(name="compat.favourite", priority=1)
        def my_favourite_task():
            order.append("favourite")

        @register_task(name="compat.other", priority=0)
        def my_other_task():
            order.append("other")

        @register_task(name="compat.cleanup", unique=True)
        def cleanup():
            pass

        @register_task(name="compat.long", queue="long_running")
        def long_task():
            pass

        my_other_task.queue()
        my_favourite_task.queue()
        self.assertTrue(cleanup.queue())
        self.assertFalse(cleanup.queue())
        long_task.queue()
        call_command("worker", "--until_done", "--exclude_queue", "long_running")
        self.assertEqual(order, ["favourite", "other"])
        self.assertEqual(TaskExec.objects.get(task_name="compat.long").state, States.QUEUED)

    def test_a_naive_due_as_in_the_readme_is_read_in_the_time_zone_with_a_warning(self):
        @register_task(name="compat.later")
        def my_task(name):
            pass

        with self.assertWarnsRegex(RuntimeWarning, "naive datetime"):
            execution = my_task.queue("John", due=datetime.datetime.now() + datetime.timedelta(hours=1))
        self.assertEqual(execution.state, States.SLEEPING)
        self.assertTrue(timezone.is_aware(execution.due))
        self.assertAlmostEqual((execution.due - timezone.now()).total_seconds(), 3600, delta=60)

    def test_schedules_as_upstream_declares_them(self):
        @schedule_task(name="compat.afternoon", cron="30 16 * * *", args=["afternoon"])
        @schedule_task(name="compat.morning", cron="30 8 * * *", args=["morning"])
        @register_task(name="compat.routine")
        def my_task(time_of_day):
            return f"Good {time_of_day} John !"

        @schedule_task(cron="30 8 * * *", run_on_creation=True)
        @register_task(name="compat.at_once")
        def at_once():
            pass

        @schedule_task(cron="30 8 * * *", datetime_kwarg="scheduled_on", catch_up=True)
        @register_task(name="compat.report")
        def report(scheduled_on=None):
            return scheduled_on

        @schedule_task(cron="* * * * * */15")
        @register_task(name="compat.seconds")
        def every_15_seconds():
            pass

        @schedule_task(cron="manual")
        @register_task(name="compat.manual")
        def for_special_occasions():
            pass

        self.assertEqual(
            {name: schedules_registry[name].cron.expression for name in ("compat.morning", "compat.afternoon")},
            {"compat.morning": "30 8 * * *", "compat.afternoon": "30 16 * * *"},
        )
        self.assertEqual(schedules_registry["compat.morning"].task, my_task._task)
        self.assertIsNone(schedules_registry["compat.at_once"].last_run)
        self.assertEqual(schedules_registry["compat.report"].datetime_kwarg, "scheduled_on")
        self.assertTrue(schedules_registry["compat.manual"].cron.is_manual)


class ScheduleQueueTests(IsolatedRegistries, TestCase):
    @override_settings(TIME_ZONE="Europe/Zurich")
    def test_upcomming_due_is_the_next_occurrence_from_now(self):
        @schedule_task(cron="0 12 * * *")
        @register_task(name="compat.noon")
        def noon():
            pass

        @schedule_task(cron="manual")
        @register_task(name="compat.by_hand")
        def by_hand():
            pass

        with time_machine.travel(datetime.datetime(2020, 1, 1, 7, tzinfo=datetime.timezone.utc), tick=False):
            Scheduler(QueueFilter()).sync()
            rows = {row.name: row for row in ScheduleExec.objects.all()}
            # 12:00 in Zurich is 11:00 in UTC.
            noon_utc = datetime.datetime(2020, 1, 1, 11, tzinfo=datetime.timezone.utc)
            self.assertEqual(rows["compat.noon"].upcomming_due, noon_utc)
            self.assertIsNone(rows["compat.by_hand"].upcomming_due)

    def test_a_schedule_queue_chooses_its_workers_and_the_task_keeps_its_own(self):
        @schedule_task(cron="30 8 * * *", queue="scheduler", last_run=None)
        @register_task(name="compat.split", queue="worker")
        def task():
            pass

        self.assertEqual(Scheduler(QueueFilter(queues=("worker",))).schedules, {})
        scheduler = Scheduler(QueueFilter(queues=("scheduler",)))
        scheduler.sync()
        (queued,) = scheduler.run_due()
        self.assertEqual(queued.queue, "worker")

    def test_an_occurrence_is_due_at_its_own_time(self):
        @schedule_task(cron="30 8 * * *", catch_up=True)
        @register_task(name="compat.daily")
        def daily():
            pass

        scheduler = Scheduler(QueueFilter())
        start = datetime.datetime(2026, 3, 1, 9, tzinfo=datetime.timezone.utc)
        scheduler.sync(now=start)
        queued = scheduler.run_due(now=start + datetime.timedelta(days=3))
        self.assertEqual(
            [execution.due for execution in queued],
            [datetime.datetime(2026, 3, day, 8, 30, tzinfo=datetime.timezone.utc) for day in (2, 3, 4)],
        )
        self.assertEqual({execution.state for execution in queued}, {States.QUEUED})


class RegisterTaskTests(IsolatedRegistries, TestCase):
    def test_register_then_queue_and_schedule_the_function(self):
        def f(x=1):
            return x

        register_task(name="compat.f")(f)
        execution = f.queue(5)
        self.assertEqual((execution.task_name, execution.args), ("compat.f", [5]))
        schedule_task(cron="@daily")(f)
        self.assertIs(schedules_registry["compat.f"].task, tasks_registry["compat.f"])

    def test_a_wraps_decorator_stacked_above(self):
        def traced(func):
            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return func(*args, **kwargs)

            return wrapper

        @traced
        @register_task(name="compat.traced")
        def g(x):
            return x * 2

        self.assertEqual(g(2), 4)
        self.assertEqual(g.queue(3).args, [3])
        self.assertEqual([execution.args for execution in g.queue_many([(1,), (2,)])], [[1], [2]])
        self.assertEqual(g.using(priority=4).queue(1).priority, 4)

    def test_queueing_a_unique_call_sooner_brings_its_sleeping_twin_forward(self):
        @register_task(name="compat.refresh", unique=True)
        def refresh(key):
            pass

        now = timezone.now()
        twin = refresh.queue("a", due=now + datetime.timedelta(hours=2))
        self.assertFalse(refresh.queue("a", due=now + datetime.timedelta(hours=1)))
        twin.refresh_from_db()
        self.assertEqual((twin.state, twin.due), (States.SLEEPING, now + datetime.timedelta(hours=1)))
        self.assertFalse(refresh.queue("a", due=now + datetime.timedelta(hours=3)))  # later: left alone
        twin.refresh_from_db()
        self.assertEqual(twin.due, now + datetime.timedelta(hours=1))
        self.assertFalse(refresh.queue("a"))  # now: queued at once
        twin.refresh_from_db()
        self.assertEqual(twin.state, States.QUEUED)
        self.assertEqual(TaskExec.objects.count(), 1)


class ResultTests(IsolatedRegistries, TransactionTestCase):
    def test_results_read_back_as_python_values_with_a_str_preview(self):
        @register_task(name="compat.pair")
        def pair():
            return (1, datetime.date(2026, 1, 2))

        execution = pair.queue()
        call_command("worker", "--until_done")
        execution.refresh_from_db()
        self.assertEqual(execution.result, (1, datetime.date(2026, 1, 2)))
        self.assertEqual(execution.result_preview, "(1, datetime.date(2026, 1, 2))")

        @register_task(name="compat.text")
        def text():
            return "plain"

        execution = text.queue()
        call_command("worker", "--until_done")
        execution.refresh_from_db()
        self.assertEqual(execution.result_preview, "plain")  # str(), not repr()


class WorkerOptionsTests(TransactionTestCase):
    def test_timeout_and_a_label_with_the_pid(self):
        call_command("worker", "--until_done", "--label", "worker-{pid}", "--timeout", "300")
        status = WorkerStatus.objects.get()
        self.assertEqual(status.label, f"worker-{os.getpid()}")
        self.assertEqual(status.timeout, datetime.timedelta(seconds=300))

    def test_a_worker_is_reaped_after_its_own_timeout(self):
        long_timeout = WorkerStatus.objects.create(
            label="patient",
            hostname="h",
            pid=1,
            timeout=datetime.timedelta(hours=1),
            last_tick=timezone.now() - datetime.timedelta(minutes=10),
        )
        short_timeout = WorkerStatus.objects.create(
            label="hasty",
            hostname="h",
            pid=2,
            timeout=datetime.timedelta(minutes=1),
            last_tick=timezone.now() - datetime.timedelta(minutes=10),
        )
        for worker in (long_timeout, short_timeout):
            execution = tasks.add.queue(1)
            TaskExec.objects.filter(pk=execution.pk).update(state=States.PROCESSING, worker=worker)
        recovery.reap_dead_workers()
        self.assertEqual(
            dict(TaskExec.objects.filter(worker__isnull=False).values_list("worker__label", "state")),
            {"patient": States.PROCESSING, "hasty": States.INTERRUPTED},
        )
        self.assertEqual((long_timeout.state, short_timeout.state), ("ONLINE", "TIMEDOUT"))


@override_settings(INSTALLED_APPS=["django_toosimple_q.apps.DjangoToosimpleQConfig"])
class AppConfigPathTests(SimpleTestCase):
    def test_upstreams_app_config_path_is_the_same_app(self):
        config = apps.get_app_config("toosimpleq")
        self.assertIsInstance(config, DjangoToosimpleQConfig)
        self.assertEqual(config.name, "django_toosimple_q")



class UpstreamHistoryCheckTests(TestCase):
    def record(self, *names):
        for name in names:
            MigrationRecorder.Migration.objects.create(app="toosimpleq", name=name)

    def test_a_database_part_way_through_upstreams_history_is_refused(self):
        MigrationRecorder.Migration.objects.filter(app="toosimpleq").delete()
        self.record(*UPSTREAM_MIGRATIONS[:10])
        (error,) = check_upstream_history(None, databases=["default"])
        self.assertEqual(error.id, "toosimpleq.E006")
        self.assertIn("0010_auto_20220324_0419", error.msg)
        self.assertIn("django-toosimple-q==1.2.1", error.hint)

    def test_all_of_upstreams_history_or_ours_passes(self):
        self.assertEqual(check_upstream_history(None, databases=["default"]), [])  # ours
        MigrationRecorder.Migration.objects.filter(app="toosimpleq").delete()
        self.record(*UPSTREAM_MIGRATIONS)
        self.assertEqual(check_upstream_history(None, databases=["default"]), [])
