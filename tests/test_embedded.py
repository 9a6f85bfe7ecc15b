"""Embedded mode: the worker inside the processes that serve requests.

The servers are real subprocesses (runserver, gunicorn) of tests.embeddedsite
on the test database; they log the worker's lines, which some tests read.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from unittest import mock, skipUnless

from django.core import checks
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.test import SimpleTestCase, TransactionTestCase, override_settings
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

from django_toosimple_q import embedded
from django_toosimple_q.checks import check_embedded_debug, check_embedded_queues, check_embedded_sqlite
from django_toosimple_q.models import TaskExec, WorkerStatus

from .helpers import REPO_DIR, wait_for, worker_env
from .testapp.models import Execution

States = TaskExec.States
SETTINGS = "tests.embeddedsite.settings"
MANAGE = [sys.executable, "manage.py"]


def site_env(**extra):
    """The environment of a process of the embedded site, logging the worker's lines."""
    return worker_env(DJANGO_SETTINGS_MODULE=SETTINGS, TOOSIMPLEQ_TEST_LOG_LEVEL="INFO", **extra)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A server subprocess of the embedded site, in a process group of its own."""

    def __init__(self, testcase, command, env):
        self.port = free_port()
        self.output = tempfile.TemporaryFile(mode="w+")
        testcase.addCleanup(self.output.close)
        # Written to a file, not a pipe, which nobody reads while it runs.
        self.process = subprocess.Popen(
            [arg.format(port=self.port) for arg in command],
            cwd=REPO_DIR,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        testcase.addCleanup(self.kill)
        self.wait_for(self.answers, "the server to answer")

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def answers(self):
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited with {self.process.returncode}:\n{self.read_output()}")
        try:
            with urllib.request.urlopen(self.url("/ping"), timeout=5):
                return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def post(self, path):
        """POST to the server; the JSON it answers."""
        with urllib.request.urlopen(urllib.request.Request(self.url(path), method="POST"), timeout=30) as response:
            return json.load(response)

    def get(self, path):
        with urllib.request.urlopen(self.url(path), timeout=30) as response:
            return json.load(response)

    def queue(self, task, key):
        """Queue a task through a request; the id of its TaskExec."""
        return self.post(f"/queue/{task}?{urllib.parse.urlencode({'key': key})}")["id"]

    def wait_for(self, predicate, message, timeout=60):
        try:
            wait_for(predicate, timeout=timeout, message=message)
        except AssertionError as error:
            raise AssertionError(f"{error}; the server's output:\n{self.read_output()}") from None

    def wait_for_exit(self, timeout=60):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the server did not exit; its output:\n{self.read_output()}") from None

    def read_output(self):
        self.output.seek(0)
        return self.output.read()

    def kill(self):
        """Kill what is left of the server's processes (the reloader's child, gunicorn's workers)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


def run_manage(*args, env):
    return subprocess.run(
        [*MANAGE, *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=120, check=True
    )


def state(pk):
    return TaskExec.objects.get(pk=pk).state


def has_state(pk, expected):
    return lambda: state(pk) == expected


def has_started(key):
    """Whether the slow task of ``key`` runs: a claimed task could still go back to the queue."""
    return lambda: Execution.objects.filter(key=f"{key} started").exists()


class EmbeddedTestCase(TransactionTestCase):
    def start_runserver(self, *options, **env):
        command = [*MANAGE, "runserver", "127.0.0.1:{port}", *options]
        return Server(self, command, site_env(**env))

    def assert_each_ran_once(self, keys):
        """Each key's task succeeded, and left one Execution row: it ran once."""
        executions = TaskExec.objects.filter(task_name="embedded.quick")
        self.assertEqual(sorted(executions.values_list("args", flat=True)), sorted([key] for key in keys))
        self.assertEqual(set(executions.values_list("state", flat=True)), {States.SUCCEEDED})
        self.assertEqual(sorted(Execution.objects.filter(key__in=keys).values_list("key", flat=True)), sorted(keys))


class RunserverTests(EmbeddedTestCase):
    def test_runs_tasks_queued_by_requests_and_the_schedules_in_the_reloaders_child_only(self):
        server = self.start_runserver()
        keys = [f"quick {i}" for i in range(5)]
        ids = [server.queue("quick", key) for key in keys]
        server.wait_for(lambda: server.get(f"/state/{ids[-1]}")["state"] == States.SUCCEEDED, "the last task")
        server.wait_for(
            lambda: TaskExec.objects.filter(pk__in=ids, state=States.SUCCEEDED).count() == len(ids)
            and TaskExec.objects.filter(task_name="embedded.every_second", state=States.SUCCEEDED).exists(),
            "the tasks and a scheduled one",
        )
        self.assert_each_ran_once(keys)
        # A second run of a scheduled due time would fail on Execution's unique key.
        self.assertFalse(TaskExec.objects.filter(state=States.FAILED).exists())
        # The reloader's parent would have registered before it started the
        # child, so it would show by now: one worker, the child's, ran everything.
        status = WorkerStatus.objects.get()
        self.assertNotEqual(status.pid, server.process.pid)
        self.assertTrue(status.label.endswith("-embedded"))
        self.assertEqual((status.threads, status.state), (2, WorkerStatus.States.ONLINE))
        ran = TaskExec.objects.exclude(state=States.QUEUED)
        self.assertEqual(set(ran.values_list("worker", flat=True)), {status.pk})

    def test_a_reload_lets_the_running_task_finish_and_the_new_child_serves(self):
        watched = tempfile.TemporaryDirectory()
        self.addCleanup(watched.cleanup)
        source = Path(watched.name) / "source"
        source.touch()  # seen by the reloader as it starts; changed below
        server = self.start_runserver(EMBEDDEDSITE_WATCHED_DIR=watched.name)
        slow = server.queue("slow", "slow")
        server.wait_for(has_started("slow"), "the task to start")
        first = WorkerStatus.objects.get()
        self.reload(source, first)
        server.wait_for(lambda: WorkerStatus.objects.count() == 2, "the new child's worker")
        self.assertEqual(state(slow), States.SUCCEEDED)
        first.refresh_from_db()
        self.assertEqual((first.state, first.exit_code), (WorkerStatus.States.STOPPED, 0))
        server.wait_for(server.answers, "the new child to answer")
        quick = server.queue("quick", "after the reload")
        server.wait_for(has_state(quick, States.SUCCEEDED), "a task after the reload")
        self.assertEqual(TaskExec.objects.get(pk=quick).worker, WorkerStatus.objects.latest("pk"))

    def reload(self, source, worker):
        """Change ``source`` until the reloader restarts the child of ``worker``.

        The reloader notes the file's time in its first look at every file,
        which can end after the server answers: a change made before then is
        never seen. A change seen stops the worker within seconds.
        """
        for _ in range(6):
            source.touch()
            try:
                wait_for(lambda: WorkerStatus.objects.get(pk=worker.pk).stopped is not None, timeout=10)
                return
            except AssertionError:
                continue
        self.fail("the reloader never restarted its child")

    def test_sigterm_with_noreload_lets_the_running_task_finish(self):
        server = self.start_runserver("--noreload")
        slow = server.queue("slow", "slow")
        server.wait_for(has_started("slow"), "the task to start")
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait_for_exit(), 0)
        self.assertEqual(state(slow), States.SUCCEEDED)
        self.assertTrue(Execution.objects.filter(key="slow").exists())
        status = WorkerStatus.objects.get()
        self.assertEqual(status.pid, server.process.pid)
        self.assertEqual((status.state, status.exit_code), (WorkerStatus.States.STOPPED, 0))

    def test_sigterm_with_noreload_queues_again_a_task_that_outlives_the_grace_period(self):
        server = self.start_runserver("--noreload", EMBEDDEDSITE_GRACE=1)
        slow = server.post("/queue/slow?key=slow&seconds=600")["id"]
        server.wait_for(has_started("slow"), "the task to start")
        server.process.send_signal(signal.SIGTERM)
        # It exits without waiting for the task's thread.
        self.assertEqual(server.wait_for_exit(), 0)
        execution = TaskExec.objects.get(pk=slow)
        self.assertEqual((execution.state, execution.replaced_by.state), (States.INTERRUPTED, States.QUEUED))
        self.assertEqual(WorkerStatus.objects.get().exit_code, WorkerStatus.ExitCodes.TERMINATED)

    def test_sigterm_to_the_reloaders_child_lets_the_running_task_finish(self):
        # A SIGTERM to the reloader's parent would make it SIGKILL its child:
        # it is the serving child that must get it.
        server = self.start_runserver()
        slow = server.queue("slow", "slow")
        server.wait_for(has_started("slow"), "the task to start")
        status = WorkerStatus.objects.get()
        os.kill(status.pid, signal.SIGTERM)
        # The child exits 0, and so does its parent, as after Ctrl-C.
        self.assertEqual(server.wait_for_exit(), 0)
        self.assertEqual(state(slow), States.SUCCEEDED)
        status.refresh_from_db()
        self.assertEqual((status.state, status.exit_code), (WorkerStatus.States.STOPPED, 0))


class StartRuleTests(EmbeddedTestCase):
    def test_migrate_and_check_start_no_worker(self):
        for command in (["migrate", "--noinput"], ["check"]):
            with self.subTest(command=command[0]):
                result = run_manage(*command, env=site_env())
                self.assertNotIn("started:", result.stdout + result.stderr)
        self.assertFalse(WorkerStatus.objects.exists())

    def test_servers_are_the_processes_that_start_it(self):
        cases = [
            (["manage.py", "runserver"], {}, False),  # the reloader's parent
            (["manage.py", "runserver"], {DJANGO_AUTORELOAD_ENV: "true"}, True),
            (["manage.py", "runserver", "--noreload"], {}, True),
            (["manage.py", "runserver", "8001", "--noreload"], {}, True),
            (["manage.py", "migrate"], {DJANGO_AUTORELOAD_ENV: "true"}, False),
        ]
        cases += [([name, command], {}, False) for name in ("manage.py", "django-admin") for command in (
            "migrate", "makemigrations", "shell", "test", "check", "collectstatic", "worker", "createsuperuser"
        )]
        for argv, env, serving in cases:
            with self.subTest(argv=argv, env=env), mock.patch.dict(os.environ, env):
                if not env:
                    os.environ.pop(DJANGO_AUTORELOAD_ENV, None)
                self.assertIs(embedded.is_serving_process(argv), serving)

    def test_building_the_wsgi_application_is_serving(self):
        seen = []
        with mock.patch("django.setup", lambda set_prefix=True: seen.append(embedded.is_serving_process(["x"]))):
            get_wsgi_application()
        self.assertEqual(seen, [True])


@skipUnless(importlib.util.find_spec("gunicorn"), "gunicorn is not installed (it is in the [test] extra)")
class GunicornTests(EmbeddedTestCase):
    def test_two_server_processes_run_each_task_once(self):
        command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:{port}"]
        server = Server(self, [*command, "tests.embeddedsite.wsgi"], site_env())
        server.wait_for(lambda: WorkerStatus.objects.count() == 2, "an embedded worker in each server process")
        keys = [f"quick {i}" for i in range(20)]
        ids = [server.queue("quick", key) for key in keys]
        server.wait_for(
            lambda: TaskExec.objects.filter(pk__in=ids, state=States.SUCCEEDED).count() == len(ids), "the tasks"
        )
        self.assert_each_ran_once(keys)
        statuses = WorkerStatus.objects.all()
        self.assertEqual(len({status.pid for status in statuses}), 2)
        self.assertTrue(all(status.label.endswith("-embedded") for status in statuses))
        self.assertNotIn(server.process.pid, {status.pid for status in statuses})
        # gunicorn's graceful stop ends each server process, and its worker.
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait_for_exit(), 0)
        self.assertEqual({status.state for status in WorkerStatus.objects.all()}, {WorkerStatus.States.STOPPED})


class BeforeMigrateTests(EmbeddedTestCase):
    def empty_database(self):
        """The name of a database without tables, dropped after the test."""
        if connection.vendor == "sqlite":
            directory = tempfile.TemporaryDirectory()
            self.addCleanup(directory.cleanup)
            return str(Path(directory.name) / "empty.sqlite3")
        name = f"{connection.settings_dict['NAME']}_empty"
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {name}")
        self.addCleanup(self.drop_database, name)
        return name

    def drop_database(self, name):
        with connection.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name} WITH (FORCE)")

    def test_the_server_serves_and_the_worker_waits_for_migrate(self):
        env = {"TOOSIMPLEQ_TEST_DB_NAME": self.empty_database()}
        server = self.start_runserver("--noreload", **env)
        server.wait_for(lambda: "waits for" in server.read_output(), "the worker to say it waits")
        self.assertTrue(server.answers())
        run_manage("migrate", "--noinput", env=site_env(**env))
        pk = server.queue("quick", "after migrate")
        server.wait_for(lambda: server.get(f"/state/{pk}")["state"] == States.SUCCEEDED, "the task after migrate")
        server.process.send_signal(signal.SIGTERM)
        self.assertEqual(server.wait_for_exit(), 0)
        output = server.read_output()
        self.assertEqual(output.count("waits for the database"), 1, output)
        self.assertEqual(output.count("started:"), 1, output)


class ChecksTests(SimpleTestCase):
    RECOMMENDED = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

    def check_sqlite(self, **options):
        with mock.patch.object(connection, "vendor", "sqlite"), mock.patch.dict(
            connection.settings_dict, {"OPTIONS": options}
        ):
            return check_embedded_sqlite(None)

    @override_settings(TOOSIMPLEQ_EMBEDDED=True)
    def test_sqlite_without_the_recommended_settings_warns(self):
        self.assertEqual(self.check_sqlite(**self.RECOMMENDED), [])
        self.assertEqual(self.check_sqlite(**{**self.RECOMMENDED, "init_command": "PRAGMA journal_mode = wal"}), [])
        for missing, named in (("init_command", "WAL"), ("transaction_mode", "IMMEDIATE"), ("timeout", "timeout")):
            with self.subTest(missing=missing):
                options = {key: value for key, value in self.RECOMMENDED.items() if key != missing}
                [warning] = self.check_sqlite(**options)
                self.assertEqual((warning.id, warning.level), ("toosimpleq.W001", checks.WARNING))
                self.assertIn(named, warning.msg)
        [warning] = self.check_sqlite()
        self.assertIn("WAL", warning.msg)
        self.assertIn("IMMEDIATE", warning.msg)
        self.assertIn("timeout", warning.msg)

    @override_settings(TOOSIMPLEQ_EMBEDDED=False)
    def test_sqlite_without_embedded_mode_is_not_checked(self):
        self.assertEqual(self.check_sqlite(), [])

    @override_settings(TOOSIMPLEQ_EMBEDDED=True)
    def test_other_databases_are_not_checked(self):
        with mock.patch.object(connection, "vendor", "postgresql"):
            self.assertEqual(check_embedded_sqlite(None), [])

    def test_embedded_without_debug_warns_of_a_worker_per_server_process(self):
        with override_settings(TOOSIMPLEQ_EMBEDDED=True, DEBUG=False):
            [warning] = check_embedded_debug(None)
        self.assertEqual((warning.id, warning.level), ("toosimpleq.W002", checks.WARNING))
        self.assertIn("each server process", warning.msg)
        for embedded_on, debug in ((True, True), (False, False)):
            with self.subTest(embedded=embedded_on, debug=debug):
                with override_settings(TOOSIMPLEQ_EMBEDDED=embedded_on, DEBUG=debug):
                    self.assertEqual(check_embedded_debug(None), [])

    def test_queues_to_serve_and_to_exclude_are_an_error(self):
        with override_settings(TOOSIMPLEQ_EMBEDDED_QUEUES=["a"], TOOSIMPLEQ_EMBEDDED_EXCLUDE_QUEUES=["b"]):
            [error] = check_embedded_queues(None)
        self.assertEqual((error.id, error.level), ("toosimpleq.E002", checks.ERROR))
        for queues, excluded in ((["a"], None), (None, ["b"]), (None, None)):
            with self.subTest(queues=queues, excluded=excluded):
                with override_settings(TOOSIMPLEQ_EMBEDDED_QUEUES=queues, TOOSIMPLEQ_EMBEDDED_EXCLUDE_QUEUES=excluded):
                    self.assertEqual(check_embedded_queues(None), [])

    @override_settings(
        TOOSIMPLEQ_EMBEDDED=True, TOOSIMPLEQ_EMBEDDED_QUEUES=["a"], TOOSIMPLEQ_EMBEDDED_EXCLUDE_QUEUES=["b"]
    )
    def test_a_bad_queue_setting_leaves_the_server_serving(self):
        with self.assertLogs("django_toosimple_q", "ERROR") as logs:
            embedded.start_if_serving(["manage.py", "runserver", "--noreload"])
        self.assertIn("cannot start", logs.output[0])
        self.assertIsNone(embedded.stop())  # none was started

    @override_settings(TOOSIMPLEQ_EMBEDDED=True, DEBUG=False)
    def test_the_checks_are_registered(self):
        ids = {message.id for message in checks.run_checks(tags=["toosimpleq"])}
        self.assertIn("toosimpleq.W002", ids)
