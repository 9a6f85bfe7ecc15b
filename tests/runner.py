"""A Django test runner that reports its real counts, for tests/run.py and CI."""

import json
import os
import sys

from django.test.runner import DiscoverRunner


class CountingRunner(DiscoverRunner):
    """DiscoverRunner that writes the outcome counts as JSON to the file named
    by $TOOSIMPLEQ_TEST_COUNTS, and that runs the `tests` package when given
    no label (discovering from the repository root would import the demo
    project and anything else named test*.py).

    "passed" counts the tests that succeeded, as unittest records them: a test
    with a failing subTest is not passed, even though it adds one entry per
    failing subTest to "failures". Expected failures are neither passed nor
    failed: they are reported on their own. "errors" includes errors outside
    any test (a failing setUpClass, a module that does not import), which
    unittest does not count in "run".
    """

    def build_suite(self, test_labels=None, **kwargs):
        return super().build_suite(test_labels or ["tests"], **kwargs)

    def teardown_databases(self, old_config, **kwargs):
        """Drop the test databases, even when a session of this run was left open on one.

        PostgreSQL refuses to drop a database in use: a connection that a
        test left open would fail the whole run after every test passed.
        Such sessions are named on stderr, for the test that leaked them to
        be found, then ended.
        """
        for connection, _, destroy in old_config:
            if destroy and connection.vendor == "postgresql":
                _end_other_sessions(connection)
        super().teardown_databases(old_config, **kwargs)

    def get_resultclass(self):
        base = super().get_resultclass() or self.test_runner.resultclass
        return type("CountingResult", (PassCounter, base), {})

    def suite_result(self, suite, result, **kwargs):
        path = os.environ.get("TOOSIMPLEQ_TEST_COUNTS")
        if path:
            counts = {
                "run": result.testsRun,
                "passed": result.passed,
                "failures": len(result.failures),
                "errors": len(result.errors),
                "skipped": len(result.skipped),
                "expected_failures": len(result.expectedFailures),
                "unexpected_successes": len(result.unexpectedSuccesses),
            }
            with open(path, "w") as file:
                json.dump(counts, file)
        return super().suite_result(suite, result, **kwargs)


class PassCounter:
    """Mixin for a unittest result class: counts the tests that passed."""

    passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1


def _end_other_sessions(connection):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, application_name, state, left(query, 200) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        sessions = cursor.fetchall()
        for pid, application, state, query in sessions:
            print(f"a session was left open on the test database: pid {pid} {application!r} {state}: {query}", file=sys.stderr)
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    connection.close()
