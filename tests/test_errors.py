"""The classifier that tells an outage from an error no retry can mend."""

from django.db import DataError, IntegrityError, InterfaceError, OperationalError, ProgrammingError
from django.test import SimpleTestCase

from django_toosimple_q.worker.errors import is_schema_behind, is_transient


class DriverError(Exception):
    """A driver's error, as psycopg raises them: with its SQLState."""

    def __init__(self, sqlstate):
        self.sqlstate = sqlstate


def with_sqlstate(error, sqlstate):
    """``error`` as Django raises it from a psycopg error carrying ``sqlstate``."""
    error.__cause__ = DriverError(sqlstate)
    return error


class ClassifierTests(SimpleTestCase):
    def test_outages_are_transient(self):
        for error in (
            InterfaceError("connection already closed"),
            OperationalError("server closed the connection unexpectedly"),
            OperationalError("database is locked"),
            with_sqlstate(OperationalError("terminating connection due to administrator command"), "57P01"),
            with_sqlstate(OperationalError("the database system is starting up"), "57P03"),
            with_sqlstate(OperationalError("could not serialize access"), "40001"),
        ):
            with self.subTest(error=error):
                self.assertTrue(is_transient(error))

    def test_mistakes_are_permanent(self):
        for error in (
            OperationalError("cannot start a transaction within a transaction"),
            OperationalError("no such table: toosimpleq_taskexec"),
            DataError("value too long for type character varying(1024)"),
            IntegrityError("duplicate key"),
            ProgrammingError("syntax error"),
            with_sqlstate(OperationalError("out of range"), "22003"),
        ):
            with self.subTest(error=error):
                self.assertFalse(is_transient(error))

    def test_tables_and_columns_migrate_has_not_made_yet(self):
        self.assertTrue(is_schema_behind(OperationalError("no such table: toosimpleq_workerstatus")))
        self.assertTrue(is_schema_behind(OperationalError("table toosimpleq_workerstatus has no column named pid")))
        self.assertTrue(is_schema_behind(with_sqlstate(ProgrammingError("relation does not exist"), "42P01")))
        self.assertTrue(is_schema_behind(with_sqlstate(ProgrammingError('column "hostname" does not exist'), "42703")))
        self.assertFalse(is_schema_behind(DataError("value too long")))
