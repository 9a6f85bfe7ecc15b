"""The app as installed, and ``manage.py worker``'s refusals of bad arguments."""

import io
import os
import subprocess
import sys

from django.apps import apps
from django.core.management import CommandError, call_command
from django.test import TestCase, TransactionTestCase

from django_toosimple_q.models import TaskExec, WorkerStatus

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

    def test_timeout_not_above_the_heartbeat(self):
        for timeout in ("5", "1", "nan", "inf"):
            self.assertRefused("timeout must be a number of seconds longer than the heartbeat", "--timeout", timeout)

    def test_tick_not_positive(self):
        self.assertRefused("tick must be a positive number of seconds", "--tick", "0")
        self.assertRefused("tick must be a positive number of seconds", "--tick", "-1")

    def test_max_tasks_below_one(self):
        self.assertRefused("max_tasks must be at least 1", "--max_tasks", "0")
        self.assertRefused("max_tasks must be at least 1", "--max_tasks", "-1")

    def test_negative_grace(self):
        self.assertRefused("grace must be a number of seconds >= 0 (--grace, TOOSIMPLEQ_GRACE)", "--grace", "-1")
        with self.settings(TOOSIMPLEQ_GRACE=-5):
            self.assertRefused("grace must be a number of seconds >= 0")

    def test_values_of_the_wrong_type(self):
        self.assertRefused("argument --threads: invalid int value: 'many'", "--threads", "many")
        self.assertRefused("argument --tick: invalid float value: 'soon'", "--tick", "soon")
        self.assertRefused("argument --max_tasks: invalid int value: '2.5'", "--max_tasks", "2.5")

    def test_missing_values(self):
        self.assertRefused("argument --queue: expected one argument", "--queue")
        self.assertRefused("argument --label: expected one argument", "--label")

    def test_unknown_argument(self):
        self.assertRefused("unrecognized arguments: --queues", "--queues", "a")


class WorkerArgumentsProcessTests(TransactionTestCase):
    # Not TestCase: on SQLite its open transaction would block the subprocess.

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
