"""Cron expressions on their own: validation, occurrences, and DST.

Pure logic with explicit datetimes: no database, no clock.
"""

import datetime
from zoneinfo import ZoneInfo

from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase, override_settings

from django_toosimple_q.cron import Cron

UTC = datetime.timezone.utc
PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def local(zone, *args, fold=0):
    return datetime.datetime(*args, tzinfo=zone, fold=fold)


def ticks(start, end, step):
    """The moments a scheduler ticking every ``step`` evaluates its schedules.

    Stepped in UTC: adding to a datetime in a DST zone steps its wall clock,
    which would go back or skip an hour when the clocks change.
    """
    now, end = start.astimezone(UTC), end.astimezone(UTC)
    while now <= end:
        yield now
        now += step


def run_ticks(cron, moments, catch_up):
    """What a scheduler evaluating ``cron`` at each of ``moments`` runs.

    The Scheduler's use of Cron, from the first moment on: the occurrences
    since the last one run, all of them with catch_up, else the latest.
    """
    moments = list(moments)
    last_due = moments[0]
    runs = []
    for now in moments:
        if catch_up:
            due_times, _ = cron.due_times(last_due, now, limit=1000)
        else:
            latest = cron.latest_due(last_due, now)
            due_times = [latest] if latest else []
        if due_times:
            runs += due_times
            last_due = due_times[-1]
    return runs


@override_settings(TIME_ZONE="UTC")
class ValidationTests(SimpleTestCase):
    def test_five_fields_are_valid(self):
        for expression in ("30 8 * * *", "*/5 * * * *", "0 9-17 * * mon-fri", "0 0 1 1 *", "0 0 L * *"):
            with self.subTest(expression):
                self.assertEqual(Cron(expression).expression, expression)

    def test_a_sixth_field_is_the_seconds(self):
        cron = Cron("0 8 * * * 30")
        due_times, _ = cron.due_times(utc(2025, 6, 1, 7), utc(2025, 6, 2, 7), limit=10)
        self.assertEqual(due_times, [utc(2025, 6, 1, 8, 0, 30)])

    def test_aliases(self):
        after = utc(2025, 6, 11, 10, 15)  # a Wednesday
        expected = {
            "@hourly": utc(2025, 6, 11, 11),
            "@daily": utc(2025, 6, 12),
            "@midnight": utc(2025, 6, 12),
            "@weekly": utc(2025, 6, 15),  # Sunday
            "@monthly": utc(2025, 7, 1),
            "@yearly": utc(2026, 1, 1),
            "@annually": utc(2026, 1, 1),
        }
        for alias, first in expected.items():
            with self.subTest(alias):
                due_times, _ = Cron(alias).due_times(after, first, limit=10)
                self.assertEqual(due_times, [first])
                self.assertEqual(Cron(alias).latest_due(after, first - datetime.timedelta(seconds=1)), None)

    def test_manual_never_comes_due(self):
        cron = Cron("manual")
        self.assertTrue(cron.is_manual)
        self.assertEqual(cron.due_times(utc(2000, 1, 1), utc(2100, 1, 1), limit=1000), ([], 0))
        self.assertIsNone(cron.latest_due(utc(2000, 1, 1), utc(2100, 1, 1)))
        self.assertIsNone(cron.latest_due(None, utc(2100, 1, 1)))

    def test_invalid_expressions_are_refused_with_the_expression(self):
        for expression in (
            "",
            "* * * *",  # 4 fields
            "* * * * * * *",  # 7 fields
            "61 * * * *",
            "30 25 * * *",
            "* * * * * 60",
            "0 0 * * 8",
            "0 0 30 2 *",  # February 30th never comes
            "every day",
            "@reboot",
            "@every 5m",
            "Manual",
        ):
            with self.subTest(expression):
                with self.assertRaisesMessage(ImproperlyConfigured, f"invalid cron {expression!r}"):
                    Cron(expression)

    def test_non_strings_are_refused(self):
        for expression in (None, 5, ["* * * * *"]):
            with self.subTest(expression):
                with self.assertRaisesMessage(ImproperlyConfigured, "cron must be a string"):
                    Cron(expression)


@override_settings(TIME_ZONE="UTC")
class DueTimesTests(SimpleTestCase):
    def test_occurrences_after_excluded_until_included_oldest_first(self):
        cron = Cron("*/10 * * * *")
        due_times, skipped = cron.due_times(utc(2025, 6, 1, 8, 0), utc(2025, 6, 1, 8, 40), limit=100)
        self.assertEqual(
            due_times,
            [utc(2025, 6, 1, 8, 10), utc(2025, 6, 1, 8, 20), utc(2025, 6, 1, 8, 30), utc(2025, 6, 1, 8, 40)],
        )
        self.assertEqual(skipped, 0)

    def test_none_due_yet(self):
        cron = Cron("30 8 * * *")
        self.assertEqual(cron.due_times(utc(2025, 6, 1, 8, 30), utc(2025, 6, 2, 8, 29, 59), limit=10), ([], 0))

    def test_the_limit_keeps_the_latest_and_counts_the_skipped(self):
        cron = Cron("* * * * *")
        due_times, skipped = cron.due_times(utc(2025, 6, 1, 8, 0), utc(2025, 6, 1, 8, 10), limit=3)
        self.assertEqual(due_times, [utc(2025, 6, 1, 8, 8), utc(2025, 6, 1, 8, 9), utc(2025, 6, 1, 8, 10)])
        self.assertEqual(skipped, 7)

    def test_due_times_are_aware(self):
        due_times, _ = Cron("@hourly").due_times(utc(2025, 6, 1), utc(2025, 6, 1, 3), limit=10)
        self.assertTrue(all(due.utcoffset() is not None for due in due_times))

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_read_on_the_wall_clock_of_time_zone(self):
        cron = Cron("30 8 * * *")
        summer, _ = cron.due_times(utc(2025, 6, 1), utc(2025, 6, 2), limit=10)
        winter, _ = cron.due_times(utc(2025, 12, 1), utc(2025, 12, 2), limit=10)
        self.assertEqual(summer, [utc(2025, 6, 1, 6, 30)])
        self.assertEqual(winter, [utc(2025, 12, 1, 7, 30)])

    @override_settings(TIME_ZONE="Europe/Paris")
    def test_after_and_until_may_be_in_any_zone(self):
        cron = Cron("30 8 * * *")
        due_times, _ = cron.due_times(local(NEW_YORK, 2025, 6, 1), local(PARIS, 2025, 6, 1, 8, 30), limit=10)
        self.assertEqual(due_times, [local(PARIS, 2025, 6, 1, 8, 30)])


@override_settings(TIME_ZONE="UTC")
class LatestDueTests(SimpleTestCase):
    def test_the_most_recent_occurrence(self):
        cron = Cron("*/10 * * * *")
        self.assertEqual(cron.latest_due(utc(2025, 6, 1, 8, 0), utc(2025, 6, 1, 8, 45)), utc(2025, 6, 1, 8, 40))

    def test_an_occurrence_at_until_counts_one_at_after_does_not(self):
        cron = Cron("*/10 * * * *")
        self.assertEqual(cron.latest_due(utc(2025, 6, 1, 8, 0), utc(2025, 6, 1, 8, 10)), utc(2025, 6, 1, 8, 10))
        self.assertIsNone(cron.latest_due(utc(2025, 6, 1, 8, 10), utc(2025, 6, 1, 8, 19, 59)))

    def test_without_after_any_past_occurrence(self):
        self.assertEqual(Cron("30 8 * * *").latest_due(None, utc(2025, 6, 3, 7)), utc(2025, 6, 2, 8, 30))

    def test_with_seconds(self):
        cron = Cron("* * * * * */15")
        self.assertEqual(
            cron.latest_due(utc(2025, 6, 1, 8, 0, 0), utc(2025, 6, 1, 8, 0, 59, 999999)), utc(2025, 6, 1, 8, 0, 45)
        )


class DaylightSavingTests(SimpleTestCase):
    """A daily 02:30 runs once on the days clocks change.

    Where 02:30 does not exist it runs an hour late; where it exists twice,
    at its first occurrence. Each case is ticked through every 5 minutes (and
    every 7, off the occurrences), with and without catch_up.
    """

    CASES = {
        # zone, the day, when its 02:30 (or 01:30) runs in UTC
        "Paris, spring forward (02:00 -> 03:00)": (
            "Europe/Paris", "30 2 * * *", datetime.date(2025, 3, 30), utc(2025, 3, 30, 1, 30),
        ),
        "Paris, fall back (03:00 -> 02:00)": (
            "Europe/Paris", "30 2 * * *", datetime.date(2025, 10, 26), utc(2025, 10, 26, 0, 30),
        ),
        "New York, spring forward (02:00 -> 03:00)": (
            "America/New_York", "30 2 * * *", datetime.date(2025, 3, 9), utc(2025, 3, 9, 7, 30),
        ),
        "New York, fall back (02:00 -> 01:00)": (
            "America/New_York", "30 2 * * *", datetime.date(2025, 11, 2), utc(2025, 11, 2, 7, 30),
        ),
        # In New York the repeated hour is 01:00-02:00.
        "New York, fall back, 01:30 (repeated)": (
            "America/New_York", "30 1 * * *", datetime.date(2025, 11, 2), utc(2025, 11, 2, 5, 30),
        ),
    }

    def test_once_on_the_day_of_the_change(self):
        for case, (zone_name, expression, day, expected) in self.CASES.items():
            zone = ZoneInfo(zone_name)
            # Noon the day before to noon the day after: that day's run and the next day's.
            start = datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(12), zone)
            end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(12), zone)
            minute, hour = map(int, expression.split()[:2])
            next_day = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(hour, minute), zone)
            for catch_up in (False, True):
                for step in (datetime.timedelta(minutes=5), datetime.timedelta(minutes=7)):
                    with self.subTest(case, catch_up=catch_up, step=step), override_settings(TIME_ZONE=zone_name):
                        runs = run_ticks(Cron(expression), ticks(start, end, step), catch_up)
                        self.assertEqual(runs, [expected, next_day])

    def test_hourly_across_the_changes_runs_each_instant_once(self):
        with override_settings(TIME_ZONE="Europe/Paris"):
            cron = Cron("30 * * * *")
            for day, hours in ((datetime.date(2025, 3, 30), 23), (datetime.date(2025, 10, 26), 25)):
                start = datetime.datetime.combine(day, datetime.time(0), PARIS)
                end = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(0), PARIS)
                for catch_up in (False, True):
                    with self.subTest(day=day, catch_up=catch_up):
                        runs = run_ticks(cron, ticks(start, end, datetime.timedelta(minutes=1)), catch_up)
                        self.assertEqual(len(runs), len(set(runs)), "an instant ran twice")
                        self.assertEqual(runs, sorted(runs))
                        # A repeated wall time runs once: one run less on the long day.
                        self.assertEqual(len(runs), 23 if hours == 23 else 24)

    def test_hourly_spring_forward_in_one_catch_up(self):
        # 02:30 does not exist: read as 03:30, the same instant as 03:30 itself.
        with override_settings(TIME_ZONE="Europe/Paris"):
            due_times, skipped = Cron("30 * * * *").due_times(utc(2025, 3, 30, 0), utc(2025, 3, 30, 3), limit=100)
        self.assertEqual(due_times, [utc(2025, 3, 30, 0, 30), utc(2025, 3, 30, 1, 30), utc(2025, 3, 30, 2, 30)])
        self.assertEqual(skipped, 0)


@override_settings(USE_TZ=False, TIME_ZONE="Europe/Paris")
class NaiveDatetimesTests(SimpleTestCase):
    """USE_TZ = False: naive datetimes in local time, in and out."""

    def test_due_times_and_latest_due_are_naive_local(self):
        cron = Cron("30 8 * * *")
        after = datetime.datetime(2025, 6, 1, 8, 0)
        until = datetime.datetime(2025, 6, 3, 9, 0)
        self.assertEqual(
            cron.due_times(after, until, limit=10),
            ([datetime.datetime(2025, 6, day, 8, 30) for day in (1, 2, 3)], 0),
        )
        self.assertEqual(cron.latest_due(after, until), datetime.datetime(2025, 6, 3, 8, 30))
        self.assertIsNone(cron.latest_due(datetime.datetime(2025, 6, 3, 8, 30), until))

    def test_once_on_the_days_the_wall_clock_jumps(self):
        cron = Cron("30 2 * * *")
        for day in (datetime.date(2025, 3, 30), datetime.date(2025, 10, 26)):
            # Noon the day before to noon the day after, every minute, as a
            # naive local clock shows it: an hour forward in spring, back in autumn.
            start = datetime.datetime.combine(day - datetime.timedelta(days=1), datetime.time(12), PARIS)
            instants = ticks(start, start + datetime.timedelta(hours=48), datetime.timedelta(minutes=1))
            wall_clock = [instant.astimezone(PARIS).replace(tzinfo=None) for instant in instants]
            expected = [
                datetime.datetime.combine(day, datetime.time(2, 30)),
                datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(2, 30)),
            ]
            for catch_up in (False, True):
                with self.subTest(day=day, catch_up=catch_up):
                    self.assertEqual(run_ticks(cron, wall_clock, catch_up), expected)
