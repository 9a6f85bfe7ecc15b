"""What the tests share: real worker subprocesses and waiting for conditions."""

import os
import subprocess
import sys
import time
from pathlib import Path

from django.db import connection

from django_toosimple_q import registry

REPO_DIR = Path(__file__).resolve().parent.parent


def worker_env(**extra):
    """The environment of a subprocess that must use this test database."""
    env = dict(os.environ)
    env["TOOSIMPLEQ_TEST_DB_NAME"] = connection.settings_dict["NAME"]
    env.update({key: str(value) for key, value in extra.items()})
    return env


def start_worker(*args, env=None, **popen_kwargs):
    """Start ``manage.py worker ARGS`` on the test database; returns the Popen."""
    command = [sys.executable, "manage.py", "worker", "--settings", "tests.settings", *args]
    popen_kwargs.setdefault("stdout", subprocess.PIPE)
    popen_kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(
        command, cwd=REPO_DIR, env=worker_env(**(env or {})), text=True, **popen_kwargs
    )


def run_worker(*args, env=None, timeout=120):
    """Run ``manage.py worker ARGS`` to its end; returns the CompletedProcess."""
    process = start_worker(*args, env=env)
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def wait_for(predicate, timeout=30, interval=0.05, message="condition"):
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")


class IsolatedRegistries:
    """A test case mixin: tasks and schedules registered by a test are gone after it."""

    def setUp(self):
        super().setUp()
        saved = dict(registry.tasks_registry), dict(registry.schedules_registry)
        self.addCleanup(self._restore_registries, *saved)

    @staticmethod
    def _restore_registries(tasks, schedules):
        registry.tasks_registry.clear()
        registry.tasks_registry.update(tasks)
        registry.schedules_registry.clear()
        registry.schedules_registry.update(schedules)


def assert_positive_integer_setting(test, name, error_id, valid):
    """Check, in ``test``, that TOOSIMPLEQ_``name`` is refused by system check ``error_id`` unless a positive integer.

    ``valid``: positive integers the check accepts.
    """
    from django.core import checks
    from django.test import override_settings

    setting = f"TOOSIMPLEQ_{name}"
    for value in (0, -1, 2.5, "50", None, True):
        with test.subTest(value=value), override_settings(**{setting: value}):
            errors = checks.run_checks(tags=["toosimpleq"])
            test.assertEqual([error.id for error in errors], [error_id])
            test.assertIn(f"{setting} must be a positive integer, not {value!r}", errors[0].msg)
    for value in valid:
        with test.subTest(value=value), override_settings(**{setting: value}):
            test.assertEqual(checks.run_checks(tags=["toosimpleq"]), [])
