"""Arguments and results as JSON: faithful round trips, clear refusals."""

import collections
import datetime
import decimal
import enum
import io
import json
import uuid
import zoneinfo

import freezegun

from django.db.models import TextField
from django.db.models.functions import Cast
from django.test import SimpleTestCase, TestCase, TransactionTestCase

from django_toosimple_q import serialization
from django_toosimple_q.models import TaskExec
from django_toosimple_q.worker import Worker

from .testapp import tasks
from .testapp.models import Execution

PARIS = zoneinfo.ZoneInfo("Europe/Paris")


class Subclassed(int):
    pass


def nested(depth):
    """A list in a list..., ``depth`` levels deep."""
    value = []
    for _ in range(depth):
        value = [value]
    return value

# Every supported kind of value, with the ones that JSON alone would change.
VALUES = {
    "str": 'héllo "world" \n ☃',
    "empty str": "",
    "int": 42,
    "negative int": -7,
    "big int": 2**62 + 1,
    "float": 0.1,
    "float exponent": 1.5e-300,
    "true": True,
    "false": False,
    "none": None,
    "list": [1, "two", [3.0]],
    "empty list": [],
    "dict": {"a": 1, "b": [None, {"c": "d"}]},
    "empty dict": {},
    "tuple": (1, "two", (3, 4)),
    "empty tuple": (),
    "aware datetime": datetime.datetime(2024, 3, 31, 2, 30, 15, 123456, tzinfo=datetime.timezone.utc),
    "aware datetime, Paris": datetime.datetime(2024, 7, 14, 9, 0, tzinfo=PARIS),
    "naive datetime": datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
    "date": datetime.date(1999, 12, 31),
    "time": datetime.time(23, 59, 58, 999999),
    "aware time": datetime.time(8, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
    "timedelta": datetime.timedelta(days=-1, seconds=5, microseconds=7),
    "decimal": decimal.Decimal("1.10"),
    "big decimal": decimal.Decimal("-123456789012345678901234567890.000000001"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "dict with a $type key": {"$type": "datetime", "value": "not a datetime"},
    "nested": {"when": [datetime.date(2020, 2, 29), (decimal.Decimal("0"), uuid.UUID(int=0))]},
}


def same_value(test, expected, actual):
    """assertEqual, also comparing types and time zones, recursively."""
    test.assertIs(type(actual), type(expected), f"{actual!r} is not {expected!r}")
    test.assertEqual(actual, expected)
    if isinstance(expected, (list, tuple)):
        for expected_item, actual_item in zip(expected, actual):
            same_value(test, expected_item, actual_item)
    elif isinstance(expected, dict):
        for key in expected:
            same_value(test, expected[key], actual[key])
    elif isinstance(expected, (datetime.datetime, datetime.time)):
        test.assertEqual(actual.utcoffset(), expected.utcoffset())
    elif isinstance(expected, decimal.Decimal):
        test.assertEqual(str(actual), str(expected))  # the precision too


class EncodeTests(TestCase):
    def test_values_round_trip_through_json_text(self):
        for label, value in VALUES.items():
            with self.subTest(label):
                text = json.dumps(serialization.encode(value))
                same_value(self, value, serialization.decode(json.loads(text)))

    def test_a_zoned_datetime_keeps_its_zone(self):
        # With its zone, not just its offset, arithmetic across DST stays right.
        paris = zoneinfo.ZoneInfo("Europe/Paris")
        before_spring_forward = datetime.datetime(2026, 3, 28, 12, 0, tzinfo=paris)
        decoded = serialization.decode(json.loads(json.dumps(serialization.encode(before_spring_forward))))
        self.assertEqual(decoded, before_spring_forward)
        self.assertEqual(decoded.tzinfo, paris)
        self.assertEqual((decoded + datetime.timedelta(days=1)).utcoffset(), datetime.timedelta(hours=2))

    def test_plain_json_is_stored_as_it_is(self):
        # Readable in the admin, and usable by anything that reads the table.
        value = {"a": [1, 2.5, "x", None, True]}
        self.assertEqual(serialization.encode(value), value)

    def test_refused_values_name_their_place_and_type(self):
        cases = [
            ({1, 2}, "value of type set"),
            (frozenset(), "value of type frozenset"),
            (b"bytes", "value of type bytes"),
            (float("nan"), "value of type float"),
            (float("inf"), "value of type float"),
            ([1, object()], "value[1] of type object"),
            ({"a": {"b": lambda: 1}}, "value['a']['b'] of type function"),
            ({1: "int key"}, "key 1 of value of type int"),
            ((1, {2}), "value[1] of type set"),
            # Subclasses would come back as their base type: refused, not changed.
            (enum.IntEnum("Level", "LOW HIGH").HIGH, "value of type Level"),
            (enum.StrEnum("Color", "RED").RED, "value of type Color"),
            (collections.namedtuple("Point", "x y")(1, 2), "value of type Point"),
            (collections.OrderedDict(a=1), "value of type OrderedDict"),
            ([True, Subclassed(3)], "value[1] of type Subclassed"),
            ("a\x00b", "value contains a NUL character"),
            ({"a\x00b": 1}, "key 'a\\x00b' of value contains a NUL character"),
            (nested(1000), "value" + "[0]" * 100 + " is nested more than 100 levels deep"),
        ]
        for value, message in cases:
            with self.subTest(message):
                with self.assertRaisesMessage(TypeError, message):
                    serialization.encode(value)


class FrozenClockTests(SimpleTestCase):
    def test_a_frozen_clocks_datetimes_and_dates_are_stored_as_such(self):
        with freezegun.freeze_time("2026-03-04 05:06:07"):
            now, today = datetime.datetime.now(datetime.timezone.utc), datetime.date.today()
        self.assertIsNot(type(now), datetime.datetime)  # freezegun's FakeDatetime
        back = serialization.decode(serialization.encode([now, today]))
        moment = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.timezone.utc)
        self.assertEqual(back, [moment, datetime.date(2026, 3, 4)])
        self.assertEqual([type(value) for value in back], [datetime.datetime, datetime.date])


class QueueArgumentsTests(TestCase):
    def test_arguments_round_trip_through_the_database(self):
        for label, value in VALUES.items():
            with self.subTest(label):
                execution = tasks.echo.queue(value, other=value)
                stored = TaskExec.objects.get(pk=execution.pk)
                same_value(self, [value], stored.args)
                same_value(self, {"other": value}, stored.kwargs)

    def test_unstorable_arguments_are_refused_by_name_and_nothing_is_stored(self):
        cases = [
            ((Execution(key="instance"),), {}, "argument 0 of type Execution"),
            ((1, {1, 2}), {}, "argument 1 of type set"),
            ((), {"handle": io.StringIO("file")}, "argument 'handle' of type StringIO"),
            ((), {"callback": lambda: None}, "argument 'callback' of type function"),
            ((), {"options": {"nested": [{3}]}}, "argument 'options'['nested'][0] of type set"),
        ]
        for args, kwargs, message in cases:
            with self.subTest(message):
                with self.assertRaisesMessage(TypeError, message):
                    tasks.echo.queue(*args, **kwargs)
        self.assertFalse(TaskExec.objects.exists())

    def test_refused_the_same_on_every_database(self):
        cases = [
            (("a\x00b",), {}, "argument 0 contains a NUL character"),
            ((), {"deep": nested(1000)}, "argument 'deep'" + "[0]" * 100 + " is nested more than 100 levels deep"),
        ]
        for args, kwargs, message in cases:
            with self.subTest(message):
                with self.assertRaisesMessage(TypeError, message):
                    tasks.echo.queue(*args, **kwargs)
        self.assertFalse(TaskExec.objects.exists())

    def test_refused_argument_of_a_unique_task_stores_nothing(self):
        with self.assertRaisesMessage(TypeError, "argument 0 of type set"):
            tasks.unique.queue({1})
        self.assertFalse(TaskExec.objects.exists())


class StoredFormTests(TestCase):
    def test_the_columns_hold_tagged_json_and_read_back_as_python_values(self):
        execution = tasks.echo.queue((1, 2), when=datetime.date(2026, 1, 2))
        TaskExec.objects.filter(pk=execution.pk).update(result=(3, "x"))
        stored = TaskExec.objects.values("args", "kwargs", "result").get(pk=execution.pk)
        self.assertEqual(stored["args"], [(1, 2)])
        raw = TaskExec.objects.filter(pk=execution.pk).values_list(
            Cast("args", TextField()), Cast("kwargs", TextField()), Cast("result", TextField())
        ).get()
        self.assertEqual(
            [json.loads(text) for text in raw],
            [
                [{"$type": "tuple", "value": [1, 2]}],
                {"when": {"$type": "date", "value": "2026-01-02"}},
                {"$type": "tuple", "value": [3, "x"]},
            ],
        )
        self.assertEqual((execution.args, execution.kwargs), ([(1, 2)], {"when": datetime.date(2026, 1, 2)}))
        self.assertEqual(TaskExec.objects.get(pk=execution.pk).result, (3, "x"))

    def test_lookups_compare_python_values(self):
        execution = tasks.echo.queue((1, 2))
        self.assertEqual(list(TaskExec.objects.filter(args=[(1, 2)])), [execution])
        self.assertFalse(TaskExec.objects.filter(args=[[1, 2]]).exists())


class ResultTests(TransactionTestCase):
    def test_a_keyword_argument_named_like_the_tag_round_trips(self):
        execution = tasks.echo_kwargs.queue(**{"$type": "tuple", "value": (1, 2)})
        stored = TaskExec.objects.get(pk=execution.pk)
        self.assertEqual(stored.kwargs, {"$type": "tuple", "value": (1, 2)})
        Worker(until_done=True, schedules=False).run()
        stored.refresh_from_db()
        self.assertEqual(stored.state, TaskExec.States.SUCCEEDED)
        self.assertEqual(stored.result, {"$type": "tuple", "value": (1, 2)})

    def test_results_round_trip(self):
        executions = {label: tasks.echo.queue(value) for label, value in VALUES.items()}
        Worker(threads=2, until_done=True, schedules=False).run()
        for label, value in VALUES.items():
            with self.subTest(label):
                execution = TaskExec.objects.get(pk=executions[label].pk)
                self.assertEqual(execution.state, TaskExec.States.SUCCEEDED, execution.error)
                same_value(self, value, execution.result)
