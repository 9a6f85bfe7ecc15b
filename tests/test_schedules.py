"""Schedules: the decorator, the scheduler with an injected clock, force_run,
the worker's use of them, and invalid crons at start-up.

In-process tests register their schedules on the fly (and the registries are
restored after each test); worker subprocesses get theirs from
tests/scheduleapp (TOOSIMPLEQ_TEST_SCHEDULE_APP=1).
"""

import datetime
import os
import subprocess
import sys
from zoneinfo import ZoneInfo

import time_machine
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import SimpleTestCase, TestCase, TransactionTestCase, override_settings

from django_toosimple_q import registry
from django_toosimple_q.decorators import register_task, schedule, schedule_task
from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus
from django_toosimple_q.registry import NOW, Schedule, Task, register, register_schedule
from django_toosimple_q.schedules import force_run
from django_toosimple_q.worker import Worker
from django_toosimple_q.worker.claiming import QueueFilter
from django_toosimple_q.worker.scheduler import Scheduler

from .helpers import REPO_DIR, IsolatedRegistries, assert_positive_integer_setting, run_worker

UTC = datetime.timezone.utc
PARIS = ZoneInfo("Europe/Paris")

SCHEDULE_APP = {"TOOSIMPLEQ_TEST_SCHEDULE_APP": "1"}
BAD_CRON_APP = {"TOOSIMPLEQ_TEST_BAD_CRON_APP": "1"}


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def greet(name="world", greeting="Hello", when=None):
    return f"{greeting} {name}"


# What the in-process worker's tasks were called with.
received = []


def record_call(**kwargs):
    received.append(kwargs)


class RegistryIsolation(IsolatedRegistries):
    def add_schedule(self, cron, *, name="sched.scheduled", queue="default", func=greet, **options):
        """A task named like the schedule, on ``queue``, and its schedule."""
        task = register(Task(func, name=name, queue=queue))
        return register_schedule(Schedule(task, cron, name=name, **options))


def executions():
    """The queued TaskExecs, in the order they were queued."""
    return list(TaskExec.objects.order_by("id"))


def whens(queued=None):
    """The ``when`` keyword argument of ``queued``, or of every TaskExec."""
    return [execution.kwargs["when"] for execution in (executions() if queued is None else queued)]


class DecoratorTests(RegistryIsolation, SimpleTestCase):
    def test_stacks_over_register_task(self):
        @schedule(cron="30 8 * * *", args=["John"])
        @register_task("sched.morning_routine")
        def morning_routine(name):
            return f"Good morning {name}"

        self.assertIsInstance(morning_routine._task, Task)
        self.assertIs(registry.tasks_registry["sched.morning_routine"], morning_routine._task)
        self.assertEqual(morning_routine("Jane"), "Good morning Jane")  # still callable as before
        scheduled = registry.schedules_registry["sched.morning_routine"]
        self.assertIs(scheduled.task, morning_routine._task)
        self.assertEqual(scheduled.cron.expression, "30 8 * * *")
        self.assertEqual(scheduled.args, ("John",))
        self.assertEqual(scheduled.kwargs, {})
        self.assertIs(scheduled.last_run, NOW)
        self.assertFalse(scheduled.catch_up)
        self.assertEqual(scheduled.queue_name, "default")

    def test_on_an_unregistered_function_is_a_clear_error(self):
        def not_a_task():
            pass

        schedules_before = dict(registry.schedules_registry)
        with self.assertRaisesMessage(ImproperlyConfigured, "@schedule must stand above @register_task()"):
            schedule(cron="30 8 * * *")(not_a_task)
        # Below @register_task, it is given the bare function too.
        with self.assertRaisesMessage(ImproperlyConfigured, "@schedule must stand above @register_task()"):
            register_task("sched.upside_down")(schedule(cron="30 8 * * *")(not_a_task))
        self.assertEqual(registry.schedules_registry, schedules_before)
        self.assertNotIn("sched.upside_down", registry.tasks_registry)

    def test_name_defaults_to_the_tasks(self):
        @schedule(cron="@daily")
        @register_task("sched.nightly")
        def nightly():
            pass

        self.assertEqual(registry.schedules_registry["sched.nightly"].name, "sched.nightly")

    def test_several_schedules_on_one_task_need_distinct_names(self):
        @register_task("sched.twice")
        def twice():
            pass

        schedule(cron="30 8 * * *")(twice)
        with self.assertRaisesMessage(ImproperlyConfigured, "Two schedules are named 'sched.twice'"):
            schedule(cron="30 16 * * *")(twice)
        self.assertEqual(registry.schedules_registry["sched.twice"].cron.expression, "30 8 * * *")

    def test_several_schedules_on_one_task_with_distinct_names(self):
        @schedule(name="sched.morning", cron="30 16 * * *", args=["morning"])
        @schedule(name="sched.afternoon", cron="30 8 * * *", args=["afternoon"])
        @register_task("sched.routine")
        def routine(time):
            pass

        morning = registry.schedules_registry["sched.morning"]
        afternoon = registry.schedules_registry["sched.afternoon"]
        self.assertIs(morning.task, routine._task)
        self.assertIs(afternoon.task, routine._task)
        self.assertEqual((morning.args, morning.cron.expression), (("morning",), "30 16 * * *"))
        self.assertEqual((afternoon.args, afternoon.cron.expression), (("afternoon",), "30 8 * * *"))

    def test_two_schedules_with_one_name_anywhere(self):
        @register_task("sched.first")
        def first():
            pass

        @register_task("sched.second")
        def second():
            pass

        schedule(cron="30 8 * * *", name="sched.shared_name")(first)
        with self.assertRaisesMessage(ImproperlyConfigured, "Two schedules are named 'sched.shared_name'"):
            schedule(cron="30 9 * * *", name="sched.shared_name")(second)
        self.assertIs(registry.schedules_registry["sched.shared_name"].task, first._task)

    def test_schedule_task_is_the_same_decorator(self):
        self.assertIs(schedule_task, schedule)

        @schedule_task(cron="0 * * * *", kwargs={"greeting": "Hi"})
        @register_task("sched.upstream_style")
        def upstream_style(greeting):
            pass

        self.assertEqual(registry.schedules_registry["sched.upstream_style"].kwargs, {"greeting": "Hi"})

    def test_run_on_creation_is_last_run_none(self):
        @schedule(cron="30 8 * * *", name="sched.with_last_run_none", last_run=None)
        @schedule(cron="30 8 * * *", name="sched.with_run_on_creation", run_on_creation=True)
        @register_task("sched.at_once")
        def at_once():
            pass

        self.assertIsNone(registry.schedules_registry["sched.with_last_run_none"].last_run)
        self.assertIsNone(registry.schedules_registry["sched.with_run_on_creation"].last_run)

    def test_an_invalid_cron_raises_at_decoration_naming_the_schedule(self):
        @register_task("sched.badly_scheduled")
        def badly_scheduled():
            pass

        for cron in ("61 * * * *", "* * * *", "@reboot", "0 0 31 2 *"):
            with self.subTest(cron):
                with self.assertRaisesMessage(
                    ImproperlyConfigured, f"Schedule sched.badly_scheduled: invalid cron {cron!r}"
                ):
                    schedule(cron=cron)(badly_scheduled)
                self.assertNotIn("sched.badly_scheduled", registry.schedules_registry)

    def test_arguments_that_cannot_be_stored_raise_at_decoration(self):
        @register_task("sched.unstorable")
        def unstorable(value):
            pass

        with self.assertRaisesMessage(ImproperlyConfigured, "Schedule sched.unstorable: argument 0 of type object"):
            schedule(cron="* * * * *", args=[object()])(unstorable)
        with self.assertRaisesMessage(ImproperlyConfigured, "Schedule sched.unstorable: argument 'value' of type set"):
            schedule(cron="* * * * *", kwargs={"value": {1, 2}})(unstorable)
        self.assertNotIn("sched.unstorable", registry.schedules_registry)

    def test_datetime_kwarg_cannot_also_be_in_kwargs(self):
        @register_task("sched.when_twice")
        def when_twice(when):
            pass

        with self.assertRaisesMessage(ImproperlyConfigured, "'when' is both in kwargs and datetime_kwarg"):
            schedule(cron="* * * * *", kwargs={"when": None}, datetime_kwarg="when")(when_twice)


class SchedulerTests(RegistryIsolation, TestCase):
    """Scheduler.sync and run_due, each given the time it is."""

    def test_the_first_run_is_the_next_occurrence(self):
        self.add_schedule("0 8 * * *", name="sched.daily", args=["John"], kwargs={"greeting": "Hi"})
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2, 7))
        row = ScheduleExec.objects.get()
        self.assertEqual(
            (row.name, row.task_name, row.cron, row.state, row.last_due, row.last_task),
            ("sched.daily", "sched.daily", "0 8 * * *", ScheduleExec.States.ACTIVE, utc(2025, 6, 2, 7), None),
        )

        self.assertEqual(scheduler.run_due(now=utc(2025, 6, 2, 7, 59, 59)), [])
        [execution] = scheduler.run_due(now=utc(2025, 6, 2, 8, 0, 1))
        self.assertEqual(
            (execution.task_name, execution.args, execution.kwargs, execution.queue, execution.state),
            ("sched.daily", ["John"], {"greeting": "Hi"}, "default", TaskExec.States.QUEUED),
        )
        row.refresh_from_db()
        self.assertEqual(row.last_due, utc(2025, 6, 2, 8))
        self.assertEqual(row.last_task, execution)

        self.assertEqual(scheduler.run_due(now=utc(2025, 6, 3, 7, 59)), [])
        [tomorrow] = scheduler.run_due(now=utc(2025, 6, 3, 8))
        row.refresh_from_db()
        self.assertEqual((row.last_due, row.last_task), (utc(2025, 6, 3, 8), tomorrow))
        self.assertEqual(TaskExec.objects.count(), 2)

    def test_a_restart_keeps_where_the_schedule_stands(self):
        self.add_schedule("0 8 * * *")
        Scheduler(QueueFilter()).sync(now=utc(2025, 6, 2, 7))
        restarted = Scheduler(QueueFilter())
        restarted.sync(now=utc(2025, 6, 2, 9))
        self.assertEqual(ScheduleExec.objects.get().last_due, utc(2025, 6, 2, 7))
        self.assertEqual(len(restarted.run_due(now=utc(2025, 6, 2, 9))), 1)  # the 8:00 missed while down

    def test_last_run_none_runs_at_once_for_the_latest_occurrence_then_on_the_cron(self):
        for option in ({"last_run": None}, {"run_on_creation": True}):
            with self.subTest(**option):
                TaskExec.objects.all().delete()
                ScheduleExec.objects.all().delete()
                registry.schedules_registry.pop("sched.at_once", None)

                @schedule(cron="0 8 * * *", name="sched.at_once", **option)
                @register_task("sched.at_once_task")
                def at_once():
                    pass

                scheduler = Scheduler(QueueFilter())
                scheduler.sync(now=utc(2025, 6, 2, 12))
                self.assertIsNone(ScheduleExec.objects.get().last_due)

                [execution] = scheduler.run_due(now=utc(2025, 6, 2, 12, 0, 1))
                row = ScheduleExec.objects.get()
                # Run at once, for the latest occurrence, as upstream 1.x.
                self.assertEqual((row.last_due, row.last_task), (utc(2025, 6, 2, 8), execution))
                self.assertEqual(scheduler.run_due(now=utc(2025, 6, 3, 7)), [])
                self.assertEqual(len(scheduler.run_due(now=utc(2025, 6, 3, 8))), 1)

    def test_a_last_run_datetime_is_the_previous_run(self):
        self.add_schedule("0 8 * * *", last_run=utc(2025, 6, 1, 8), catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 3, 12))
        scheduler.run_due(now=utc(2025, 6, 3, 12))
        self.assertEqual(whens(), [utc(2025, 6, 2, 8), utc(2025, 6, 3, 8)])

    def test_without_catch_up_only_the_latest_missed_occurrence_runs(self):
        self.add_schedule("0 8 * * *", datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2, 7))
        # Down from the 2nd at 7:00 to the 5th at 9:00: four 8:00 missed.
        queued = scheduler.run_due(now=utc(2025, 6, 5, 9))
        self.assertEqual(whens(queued), [utc(2025, 6, 5, 8)])
        self.assertEqual(ScheduleExec.objects.get().last_due, utc(2025, 6, 5, 8))
        self.assertEqual(scheduler.run_due(now=utc(2025, 6, 5, 9)), [])

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_with_catch_up_every_missed_occurrence_runs_oldest_first_with_its_due(self):
        self.add_schedule("30 8 * * *", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=datetime.datetime(2025, 6, 2, 7, tzinfo=PARIS))
        queued = scheduler.run_due(now=datetime.datetime(2025, 6, 5, 9, tzinfo=PARIS))

        expected = [datetime.datetime(2025, 6, day, 8, 30, tzinfo=PARIS) for day in (2, 3, 4, 5)]
        self.assertEqual(queued, executions())  # queued in due order
        received_whens = whens(queued)
        self.assertEqual(received_whens, expected)
        for when in received_whens:  # aware, on the wall clock of TIME_ZONE
            self.assertEqual((when.hour, when.minute, when.utcoffset()), (8, 30, datetime.timedelta(hours=2)))
        row = ScheduleExec.objects.get()
        self.assertEqual((row.last_due, row.last_task), (expected[-1], queued[-1]))
        self.assertEqual(scheduler.run_due(now=datetime.datetime(2025, 6, 5, 9, tzinfo=PARIS)), [])

    @override_settings(TOOSIMPLEQ_CATCH_UP_LIMIT=3)
    def test_catch_up_limit_queues_the_latest_and_logs_the_skipped(self):
        self.add_schedule("* * * * *", name="sched.every_minute", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2, 8))
        with self.assertLogs("django_toosimple_q", "WARNING") as logs:
            queued = scheduler.run_due(now=utc(2025, 6, 2, 8, 10))
        self.assertEqual(whens(queued), [utc(2025, 6, 2, 8, minute) for minute in (8, 9, 10)])
        [line] = logs.output
        self.assertIn("schedule sched.every_minute: 7 missed occurrence(s) skipped", line)
        self.assertIn("TOOSIMPLEQ_CATCH_UP_LIMIT", line)
        self.assertEqual(ScheduleExec.objects.get().last_due, utc(2025, 6, 2, 8, 10))

    def test_the_default_catch_up_limit_is_1000(self):
        self.add_schedule("* * * * * *", name="sched.every_second", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        start = utc(2025, 6, 2, 8)
        scheduler.sync(now=start)
        with self.assertLogs("django_toosimple_q", "WARNING") as logs:
            queued = scheduler.run_due(now=start + datetime.timedelta(seconds=1200))
        self.assertEqual(len(queued), 1000)
        self.assertEqual(whens(queued[:1]), [start + datetime.timedelta(seconds=201)])
        self.assertIn("200 missed occurrence(s) skipped", logs.output[0])

    def test_a_frozen_clock_drives_run_due_without_now(self):
        # The worker calls sync() and run_due() without a time: they read the clock.
        self.add_schedule("0 8 * * *", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        with time_machine.travel(utc(2025, 6, 2, 7), tick=False) as clock:
            scheduler.sync()
            self.assertEqual(scheduler.run_due(), [])
            clock.move_to(utc(2025, 6, 4, 8, 0, 0, 500))
            self.assertEqual(whens(scheduler.run_due()), [utc(2025, 6, 2, 8), utc(2025, 6, 3, 8), utc(2025, 6, 4, 8)])

    def test_manual_never_runs_by_itself(self):
        self.add_schedule("manual")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2))
        self.assertEqual(scheduler.run_due(now=utc(2035, 6, 2)), [])
        self.assertEqual(ScheduleExec.objects.get().last_due, utc(2025, 6, 2))

    def test_a_manual_schedule_with_last_run_none_runs_once_at_once(self):
        self.add_schedule("manual", last_run=None, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2))
        self.assertEqual(whens(scheduler.run_due(now=utc(2025, 6, 2, 0, 0, 1))), [utc(2025, 6, 2, 0, 0, 1)])
        self.assertEqual(scheduler.run_due(now=utc(2035, 6, 2)), [])

    def test_each_due_time_is_claimed_once(self):
        schedule = self.add_schedule("0 8 * * *")
        first, second = Scheduler(QueueFilter()), Scheduler(QueueFilter())
        first.sync(now=utc(2025, 6, 2, 7))
        second.sync(now=utc(2025, 6, 2, 7, 30))
        self.assertEqual(len(first.run_due(now=utc(2025, 6, 2, 8, 0, 1))), 1)
        self.assertEqual(second.run_due(now=utc(2025, 6, 2, 8, 0, 2)), [])
        # A scheduler that read last_due before the other moved it on (the
        # race between two workers) loses the compare-and-set.
        self.assertEqual(second._run_schedule(schedule, utc(2025, 6, 2, 7), utc(2025, 6, 2, 8, 0, 2)), [])
        self.assertEqual(TaskExec.objects.count(), 1)

    def test_a_worker_evaluates_the_schedules_of_the_queues_it_serves(self):
        self.add_schedule("0 8 * * *", name="sched.on_a", queue="a", last_run=None)
        # The schedule's queue, not its task's, chooses the workers that
        # evaluate it (as upstream's did); its runs go to the task's queue.
        task = register(Task(greet, name="sched.task_on_a", queue="a"))
        register_schedule(Schedule(task, "0 8 * * *", name="sched.on_b", queue="b", last_run=None))
        cases = {
            "--queue a": (QueueFilter(queues=("a",)), {"sched.on_a": "a"}),
            "--queue b": (QueueFilter(queues=("b",)), {"sched.on_b": "a"}),
            "--exclude_queue a": (QueueFilter(excluded=("a",)), {"sched.on_b": "a"}),
            "--exclude_queue a --exclude_queue b": (QueueFilter(excluded=("a", "b")), {}),
            "every queue": (QueueFilter(), {"sched.on_a": "a", "sched.on_b": "a"}),
        }
        for case, (queue_filter, expected) in cases.items():
            with self.subTest(case):
                TaskExec.objects.all().delete()
                ScheduleExec.objects.all().delete()
                scheduler = Scheduler(queue_filter)
                scheduler.sync(now=utc(2025, 6, 2, 7))
                self.assertEqual(set(ScheduleExec.objects.values_list("name", flat=True)), set(expected))
                queued = scheduler.run_due(now=utc(2025, 6, 2, 7, 0, 1))
                self.assertEqual(
                    {ScheduleExec.objects.get(last_task=e).name: e.queue for e in queued}, expected
                )

    def test_a_schedule_no_longer_in_the_code_is_invalid(self):
        ScheduleExec.objects.create(name="sched.removed", task_name="sched.removed", cron="0 8 * * *")
        self.add_schedule("0 8 * * *", name="sched.kept", queue="a")
        # Even a worker that does not serve the kept schedule's queue leaves it alone.
        Scheduler(QueueFilter(queues=("other",))).sync(now=utc(2025, 6, 2, 7))
        Scheduler(QueueFilter()).sync(now=utc(2025, 6, 2, 7))
        states = dict(ScheduleExec.objects.values_list("name", "state"))
        self.assertEqual(states, {"sched.removed": "INVALID", "sched.kept": "ACTIVE"})

    def test_an_invalid_schedule_is_not_run_and_comes_back_with_its_code(self):
        self.add_schedule("0 8 * * *", name="sched.back")
        ScheduleExec.objects.create(
            name="sched.back", cron="0 9 * * *", last_due=utc(2025, 6, 2, 7), state=ScheduleExec.States.INVALID
        )
        scheduler = Scheduler(QueueFilter())
        self.assertEqual(scheduler.run_due(now=utc(2025, 6, 2, 8, 0, 1)), [])
        scheduler.sync(now=utc(2025, 6, 2, 8, 0, 1))
        row = ScheduleExec.objects.get()
        self.assertEqual((row.state, row.cron, row.last_due), ("ACTIVE", "0 8 * * *", utc(2025, 6, 2, 7)))
        self.assertEqual(len(scheduler.run_due(now=utc(2025, 6, 2, 8, 0, 1))), 1)

    def test_once_a_day_across_dst_changes(self):
        cases = (
            ("Europe/Paris", datetime.date(2025, 3, 30), utc(2025, 3, 30, 1, 30)),  # runs at 03:30 CEST
            ("Europe/Paris", datetime.date(2025, 10, 26), utc(2025, 10, 26, 0, 30)),  # the first 02:30
            ("America/New_York", datetime.date(2025, 3, 9), utc(2025, 3, 9, 7, 30)),  # runs at 03:30 EDT
            ("America/New_York", datetime.date(2025, 11, 2), utc(2025, 11, 2, 7, 30)),
        )
        for zone_name, day, expected in cases:
            zone = ZoneInfo(zone_name)
            next_day = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(2, 30), zone)
            for catch_up in (False, True):
                with self.subTest(zone_name, day=day, catch_up=catch_up), override_settings(TIME_ZONE=zone_name):
                    TaskExec.objects.all().delete()
                    ScheduleExec.objects.all().delete()
                    registry.schedules_registry.pop("sched.scheduled", None)
                    self.add_schedule("30 2 * * *", catch_up=catch_up, datetime_kwarg="when")
                    scheduler = Scheduler(QueueFilter())
                    # In UTC, so that adding steps real time rather than the wall clock.
                    now = datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(12), zone)
                    now = now.astimezone(UTC)
                    scheduler.sync(now=now)
                    # A worker ticking every 15 minutes, noon the day before to noon the day after.
                    for _ in range(48 * 4 + 1):
                        scheduler.run_due(now=now)
                        now += datetime.timedelta(minutes=15)
                    # In UTC: Python never finds a time of a repeated hour
                    # equal to one of another zone, even the same instant.
                    self.assertEqual([when.astimezone(UTC) for when in whens()], [expected, next_day.astimezone(UTC)])
                    self.assertEqual(whens()[0].tzinfo, zone)

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_hourly_with_catch_up_across_spring_forward(self):
        # 02:30 does not exist on that night: read as 03:30, it is the same
        # instant as 03:30 itself, and must be queued once.
        self.add_schedule("30 * * * *", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        now = utc(2025, 3, 29, 23)  # midnight in Paris
        scheduler.sync(now=now)
        while now <= utc(2025, 3, 30, 4):
            scheduler.run_due(now=now)
            now += datetime.timedelta(minutes=5)
        self.assertEqual(whens(), [utc(2025, 3, 29, 23, 30), *(utc(2025, 3, 30, hour, 30) for hour in range(4))])


@override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris")
class NaiveDatetimesSchedulerTests(RegistryIsolation, TestCase):
    """USE_TZ = False: naive local datetimes are stored and passed."""

    def test_catch_up_and_datetime_kwarg(self):
        self.add_schedule("30 8 * * *", catch_up=True, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=datetime.datetime(2025, 6, 2, 7))
        self.assertEqual(ScheduleExec.objects.get().last_due, datetime.datetime(2025, 6, 2, 7))
        queued = scheduler.run_due(now=datetime.datetime(2025, 6, 4, 9))
        self.assertEqual(whens(queued), [datetime.datetime(2025, 6, day, 8, 30) for day in (2, 3, 4)])
        self.assertEqual(ScheduleExec.objects.get().last_due, datetime.datetime(2025, 6, 4, 8, 30))
        self.assertEqual(scheduler.run_due(now=datetime.datetime(2025, 6, 4, 9)), [])

    def test_latest_only_and_last_run_none(self):
        self.add_schedule("30 8 * * *", name="sched.latest", datetime_kwarg="when")
        self.add_schedule("30 8 * * *", name="sched.at_once", last_run=None, datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=datetime.datetime(2025, 6, 2, 7))
        queued = scheduler.run_due(now=datetime.datetime(2025, 6, 4, 9))
        self.assertEqual(
            {e.task_name: e.kwargs["when"] for e in queued},
            {"sched.latest": datetime.datetime(2025, 6, 4, 8, 30), "sched.at_once": datetime.datetime(2025, 6, 4, 8, 30)},
        )

    def test_force_run(self):
        self.add_schedule("manual", datetime_kwarg="when")
        with time_machine.travel(datetime.datetime(2025, 6, 2, 9, tzinfo=PARIS), tick=False):
            execution = force_run("sched.scheduled")
        self.assertEqual(execution.kwargs["when"], datetime.datetime(2025, 6, 2, 9))


class ForceRunTests(RegistryIsolation, TestCase):
    @override_settings(TIME_ZONE="America/New_York")
    def test_queues_now_without_touching_last_due(self):
        self.add_schedule("0 8 * * *", args=["John"], datetime_kwarg="when")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2, 11))
        forced_at = utc(2025, 6, 2, 11, 30)
        with time_machine.travel(forced_at, tick=False):
            execution = force_run("sched.scheduled")
        self.assertEqual((execution.task_name, execution.args), ("sched.scheduled", ["John"]))
        when = execution.kwargs["when"]  # the time of the forced run, in TIME_ZONE
        self.assertEqual((when, when.hour, when.utcoffset()), (forced_at, 7, datetime.timedelta(hours=-4)))
        row = ScheduleExec.objects.get()
        self.assertEqual((row.last_due, row.last_task), (utc(2025, 6, 2, 11), execution))
        # The next occurrence (8:00 New York, 12:00 UTC) runs as it would have.
        [scheduled] = scheduler.run_due(now=utc(2025, 6, 2, 12))
        self.assertEqual(scheduled.kwargs["when"], utc(2025, 6, 2, 12))

    def test_a_manual_schedule_runs_only_when_forced(self):
        self.add_schedule("manual")
        scheduler = Scheduler(QueueFilter())
        scheduler.sync(now=utc(2025, 6, 2))
        self.assertEqual(scheduler.run_due(now=utc(2030, 1, 1)), [])
        execution = force_run("sched.scheduled")
        self.assertEqual(executions(), [execution])
        self.assertEqual(ScheduleExec.objects.get().last_task, execution)

    def test_an_unknown_schedule(self):
        with self.assertRaisesMessage(LookupError, "No schedule named 'sched.nothing' is registered"):
            force_run("sched.nothing")
        self.assertEqual(TaskExec.objects.count(), 0)


class WorkerRunsSchedulesTests(RegistryIsolation, TransactionTestCase):
    """The scheduler in a worker's loop thread, in this process."""

    def setUp(self):
        super().setUp()
        received.clear()
        self.add_schedule("0 0 1 1 *", name="sched.record_call", func=record_call, last_run=None, datetime_kwarg="when")

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_the_task_receives_its_due_time(self):
        self.assertEqual(Worker(until_done=True, tick=0.05).run(), 0)
        [call] = received
        when = call["when"]
        self.assertEqual(when.utcoffset(), when.astimezone(PARIS).utcoffset())  # aware, in TIME_ZONE
        row = ScheduleExec.objects.get()
        self.assertEqual(row.last_due, when)
        self.assertEqual(row.last_task.state, TaskExec.States.SUCCEEDED)

    def test_no_schedules(self):
        self.assertEqual(Worker(until_done=True, tick=0.05, schedules=False).run(), 0)
        self.assertEqual((received, ScheduleExec.objects.count(), TaskExec.objects.count()), ([], 0, 0))

    def test_a_worker_of_other_queues(self):
        self.assertEqual(Worker(until_done=True, tick=0.05, queues=["other"]).run(), 0)
        self.assertEqual((received, ScheduleExec.objects.count(), TaskExec.objects.count()), ([], 0, 0))


class WorkerCommandSchedulesTests(TransactionTestCase):
    """`manage.py worker` processes running the schedules of tests/scheduleapp."""

    def run_worker(self, *args, env=SCHEDULE_APP):
        return run_worker("--until_done", *args, env=env)

    def assertRan(self, result, names):
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(set(ScheduleExec.objects.values_list("name", flat=True)), set(names))
        self.assertEqual(
            sorted(TaskExec.objects.filter(state=TaskExec.States.SUCCEEDED).values_list("task_name", flat=True)),
            sorted(names),
        )
        self.assertEqual(TaskExec.objects.count(), len(names))

    def test_queue(self):
        self.assertRan(self.run_worker("--queue", "at_start_a"), ["scheduleapp.at_start_a"])

    def test_exclude_queue(self):
        result = self.run_worker("--exclude_queue", "every_second", "--exclude_queue", "at_start_a")
        self.assertRan(result, ["scheduleapp.at_start_b"])

    def test_no_schedules(self):
        self.assertRan(self.run_worker("--no_schedules"), [])

    def test_runs_at_the_first_start_only(self):
        self.assertRan(self.run_worker("--queue", "at_start_a"), ["scheduleapp.at_start_a"])
        self.assertRan(self.run_worker("--queue", "at_start_a"), ["scheduleapp.at_start_a"])

    def test_an_invalid_cron_stops_the_worker_before_it_starts(self):
        result = self.run_worker(env={**SCHEDULE_APP, **BAD_CRON_APP})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            "ImproperlyConfigured: Schedule badcronapp.nightly_report: invalid cron '30 25 * * *'", result.stderr
        )
        self.assertEqual((WorkerStatus.objects.count(), ScheduleExec.objects.count()), (0, 0))


class ManagePyCheckTests(SimpleTestCase):
    def manage_py_check(self, env):
        return subprocess.run(
            [sys.executable, "manage.py", "check", "--settings", "tests.settings"],
            cwd=REPO_DIR,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_an_invalid_cron_is_an_error(self):
        result = self.manage_py_check(BAD_CRON_APP)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Schedule badcronapp.nightly_report: invalid cron '30 25 * * *'", result.stderr)

    def test_valid_schedules_pass(self):
        result = self.manage_py_check(SCHEDULE_APP)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("System check identified no issues", result.stdout)

    def test_catch_up_limit_must_be_a_positive_integer(self):
        assert_positive_integer_setting(self, "CATCH_UP_LIMIT", "toosimpleq.E001", valid=(1, 1000))

    @override_settings(TOOSIMPLEQ_CATCH_UP_LIMIT=0)
    def test_manage_py_check_reports_the_catch_up_limit(self):
        # Only our checks: the models' checks would ask SQLite about its JSON
        # support, a query this SimpleTestCase forbids.
        with self.assertRaisesMessage(SystemCheckError, "toosimpleq.E001"):
            call_command("check", tags=["toosimpleq"])
