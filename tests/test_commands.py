"""The app as installed, and ``manage.py worker``'s refusals of bad arguments."""

import io
import os
import subprocess
import sys
from unittest import skipUnless

from django.apps import apps
from django.core.management import CommandError, call_command
from django.core import checks
from django.core.management.base import SystemCheckError
from django.db import connection
from django.test import SimpleTestCase, TestCase, TransactionTestCase

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker.loop import Worker

from .helpers import REPO_DIR, run_worker


class WorkerArgumentsTests(TestCase):
    def assertRefused(self, message, *args):
        with self.assertRaisesMessage(CommandError, message):
            call_command("worker", *args)
        # Refused before starting: no worker ran.
        self.assertFalse(WorkerStatus.objects.exists())

    def test_queue_and_exclude_queue_together(self):
        self.assertRefused("not both", "--queue", "a", "--exclude_queue", "b")

    def test_threads_below_one(self):
        self.assertRefused("threads must be at least 1", "--threads", "0")
        self.assertRefused("threads must be at least 1", "--threads", "-3")

    def test_timeout_not_positive_or_not_finite(self):
        for timeout in ("0", "-1", "nan", "inf"):
            with self.subTest(timeout=timeout):
                self.assertRefused("timeout must be a finite number of seconds > 0", "--timeout", timeout)

    def test_timeout_below_the_heartbeat_gets_two_heartbeats_within_it(self):
        # Upstream's tests run `worker --timeout 3` with TOOSIMPLEQ_HEARTBEAT at 5.
        with self.settings(TOOSIMPLEQ_HEARTBEAT=5):
            self.assertEqual(Worker(timeout=3).heartbeat, 1.5)
            self.assertEqual(Worker(timeout=60).heartbeat, 5)

    def test_tick_not_positive_or_not_finite(self):
        for tick in ("0", "-1", "nan", "inf"):
            with self.subTest(tick=tick):
                self.assertRefused(f"tick must be a finite number of seconds > 0, not {float(tick)}", "--tick", tick)

    def test_max_tasks_below_one(self):
        self.assertRefused("max_tasks must be at least 1", "--max_tasks", "0")
        self.assertRefused("max_tasks must be at least 1", "--max_tasks", "-1")

    def test_negative_or_not_finite_grace(self):
        for grace in ("-1", "nan", "inf"):
            with self.subTest(grace=grace):
                self.assertRefused(
                    f"grace must be a finite number of seconds >= 0 (--grace, TOOSIMPLEQ_GRACE), not {float(grace)}",
                    "--grace",
                    grace,
                )
        with self.settings(TOOSIMPLEQ_GRACE=-5):
            self.assertRefused("grace must be a finite number of seconds >= 0")

    def test_values_of_the_wrong_type(self):
        self.assertRefused("argument --threads: invalid int value: 'many'", "--threads", "many")
        self.assertRefused("argument --tick: invalid float value: 'soon'", "--tick", "soon")
        self.assertRefused("argument --max_tasks: invalid int value: '2.5'", "--max_tasks", "2.5")

    def test_missing_values(self):
        self.assertRefused("argument --queue: expected one argument", "--queue")
        self.assertRefused("argument --label: expected one argument", "--label")

    def test_unknown_argument(self):
        self.assertRefused("unrecognized arguments: --queues", "--queues", "a")


class SettingsChecksTests(SimpleTestCase):
    # The worker command runs every check, and Django's model checks ask each
    # database for its features: a query, the first time in a process.
    databases = "__all__"

    def errors(self):
        return checks.run_checks(tags=["toosimpleq"])

    def test_a_worker_timeout_not_above_the_heartbeat_is_an_error(self):
        for heartbeat, timeout in ((5, 2), (5, 5), (float("nan"), 60), (5, float("inf")), (0, 1)):
            with self.subTest(heartbeat=heartbeat, timeout=timeout):
                with self.settings(TOOSIMPLEQ_HEARTBEAT=heartbeat, TOOSIMPLEQ_WORKER_TIMEOUT=timeout):
                    [error] = self.errors()
                self.assertEqual(error.id, "toosimpleq.E004")
                self.assertIn(f"TOOSIMPLEQ_WORKER_TIMEOUT ({timeout!r}) must be greater than", error.msg)
        with self.settings(TOOSIMPLEQ_HEARTBEAT=1, TOOSIMPLEQ_WORKER_TIMEOUT=3):
            self.assertEqual(self.errors(), [])

    def test_the_worker_does_not_start_with_it(self):
        with self.settings(TOOSIMPLEQ_HEARTBEAT=5, TOOSIMPLEQ_WORKER_TIMEOUT=2):
            with self.assertRaisesMessage(SystemCheckError, "toosimpleq.E004"):
                call_command("worker", "--until_done", skip_checks=False)

    def test_limits_that_are_not_usable_numbers_are_errors(self):
        for setting, value in (
            ("TOOSIMPLEQ_MAX_INTERRUPTIONS", 0),
            ("TOOSIMPLEQ_MAX_INTERRUPTIONS", "3"),
            ("TOOSIMPLEQ_MAX_RETRY_DELAY", float("inf")),
            ("TOOSIMPLEQ_MAX_RETRY_DELAY", 0),
            ("TOOSIMPLEQ_MAX_OUTPUT", -1),
            ("TOOSIMPLEQ_MAX_OUTPUT", 1e6),
        ):
            with self.subTest(setting=setting, value=value):
                with self.settings(**{setting: value}):
                    [error] = self.errors()
                self.assertEqual(error.id, "toosimpleq.E005")
                self.assertTrue(error.msg.startswith(f"{setting} must be"), error.msg)


class WorkerArgumentsProcessTests(TransactionTestCase):
    # Not TestCase: on SQLite its open transaction would block the subprocess.

    @skipUnless(connection.vendor == "postgresql", "PostgreSQL refuses a label longer than its column")
    def test_a_registration_the_database_refuses_stops_the_worker_with_the_reason(self):
        env = {"TOOSIMPLEQ_TEST_LOG_LEVEL": "ERROR"}
        result = run_worker("--until_done", "--no_schedules", "--label", "x" * 1100, env=env, timeout=60)
        self.assertEqual(result.returncode, WorkerStatus.ExitCodes.CRASHED, result.stderr)
        self.assertIn("cannot register: value too long", result.stderr)

    def test_a_refused_argument_exits_with_the_message_and_no_traceback(self):
        result = run_worker("--queue", "a", "--exclude_queue", "b", timeout=60)
        self.assertEqual(result.returncode, 1)
        self.assertIn("CommandError: give the queues to serve or the queues to exclude, not both", result.stderr)
        self.assertNotIn("Traceback", result.stderr)


class InstallationTests(TestCase):
    def test_app_label_and_models(self):
        config = apps.get_app_config("toosimpleq")
        self.assertEqual(config.name, "django_toosimple_q")
        self.assertIs(apps.get_model("toosimpleq", "TaskExec"), TaskExec)
        self.assertIs(apps.get_model("toosimpleq", "WorkerStatus"), WorkerStatus)

    def test_migrations_match_the_models(self):
        # What `migrate` creates is what the code expects: no change left out.
        output = io.StringIO()
        call_command("makemigrations", "toosimpleq", "--check", "--dry-run", stdout=output)
        self.assertIn("No changes detected", output.getvalue())


class ManagePyTestTests(TestCase):
    def test_manage_py_test_runs_the_suite(self):
        # As upstream's README says: from the repository, with no settings given.
        env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
        env["TOOSIMPLEQ_TEST_DB"] = "sqlite"  # its default: the suite's run may be on a server's database
        result = subprocess.run(
            [sys.executable, "manage.py", "test", "tests.test_errors"],
            cwd=REPO_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Ran 3 tests", result.stderr)
