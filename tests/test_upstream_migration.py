"""An upstream 1.2.1 database, made by running upstream, migrated and then drained.

The fixtures (tests/upstream/, see make_fixtures.py there) are a SQLite file
and a PostgreSQL dump; each database's run of the suite migrates its own in
a copy, with ``manage.py migrate`` in a subprocess, runs a worker on it, and
reads the rows back (``inventory`` below, in another subprocess).
"""

import base64
import datetime
import decimal
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
from django.conf import settings
from django.test import SimpleTestCase

from .helpers import REPO_DIR

FIXTURES = Path(__file__).resolve().parent / "upstream"
VENDOR = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
UTC = datetime.timezone.utc


def inventory():
    """Print the rows of the database, pickled: run by ``manage.py shell`` on a migrated fixture."""
    from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus

    fields = ("task_name", "state", "args", "kwargs", "result", "result_preview", "error", "queue", "priority")
    executions = {}
    for row in TaskExec.objects.all():
        executions[row.pk] = {name: getattr(row, name) for name in fields}
        executions[row.pk].update(replaced_by=row.replaced_by_id, unique=row.dedup_key is not None)
    rows = {
        "executions": executions,
        "schedules": dict(ScheduleExec.objects.values_list("name", "last_due")),
        "workers": {row.pk: (row.label, row.stopped) for row in WorkerStatus.objects.all()},
    }
    sys.stdout.write(base64.b64encode(pickle.dumps(rows)).decode())


class UpstreamDatabaseTests(SimpleTestCase):
    """Migrated once for the class: migrate, then a worker, then the checks read the rows."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.env = {**os.environ, "TOOSIMPLEQ_TEST_UPSTREAM_APP": "1"}
        cls.env["TOOSIMPLEQ_TEST_DB_NAME"] = cls.make_database()
        cls.manage("migrate", "--noinput")
        cls.migrated = cls.inventory()
        # A call queued after the upgrade, drained with the rest.
        cls.manage("shell", "-c", "from tests.upstreamapp.tasks import add; add.queue(40, b=2)")
        cls.manage("worker", "--until_done", "--no_schedules")
        cls.drained = cls.inventory()

    @classmethod
    def make_database(cls):
        """A copy of the fixture of this run's database; its name."""
        if VENDOR == "sqlite3":
            directory = tempfile.mkdtemp(prefix="toosimpleq-upstream-")
            cls.addClassCleanup(shutil.rmtree, directory)
            copy = os.path.join(directory, "upstream.sqlite3")
            shutil.copy(FIXTURES / "upstream-1.2.1.sqlite", copy)
            return copy
        name = f"upstream_{uuid.uuid4().hex[:8]}"
        cls.on_server(f"CREATE DATABASE {name}")
        cls.addClassCleanup(cls.on_server, f"DROP DATABASE {name} WITH (FORCE)")
        server = settings.DATABASES["default"]
        psql = os.path.join(os.environ["TOOSIMPLEQ_PG_BINDIR"], "psql")
        dump = FIXTURES / "upstream-1.2.1.postgres.sql"
        subprocess.run(
            [psql, "-q", "-v", "ON_ERROR_STOP=1", "-h", server["HOST"], "-p", str(server["PORT"])]
            + ["-U", server["USER"], "-f", str(dump), name],
            check=True,
            capture_output=True,
        )
        return name

    @staticmethod
    def on_server(sql):
        server = settings.DATABASES["default"]
        with psycopg.connect(
            dbname="postgres", host=server["HOST"], port=server["PORT"], user=server["USER"], autocommit=True
        ) as connection:
            connection.execute(sql)

    @classmethod
    def manage(cls, *command):
        """Run ``manage.py COMMAND`` on the migrated copy; its stdout."""
        done = subprocess.run(
            [sys.executable, "manage.py", *command, "--settings", "tests.settings"],
            cwd=REPO_DIR,
            env=cls.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        return done.stdout

    @classmethod
    def inventory(cls):
        printed = cls.manage("shell", "-c", "from tests.test_upstream_migration import inventory; inventory()")
        return pickle.loads(base64.b64decode(printed.strip().splitlines()[-1]))

    def by_task(self, rows, task_name):
        return [row for _, row in sorted(rows["executions"].items()) if row["task_name"] == task_name]

    def test_finished_rows_keep_their_history_with_json_values(self):
        rows = self.migrated
        (add,) = [row for row in self.by_task(rows, "upstream.add") if row["state"] == "SUCCEEDED"]
        self.assertEqual((add["args"], add["kwargs"], add["result"], add["result_preview"]), ([1], {"b": 2}, 3, "3"))
        (pair,) = [row for row in self.by_task(rows, "upstream.pair") if row["state"] == "SUCCEEDED"]
        self.assertEqual((pair["result"], pair["queue"], pair["priority"]), ((1, "b"), "reports", 3))
        echoed = [row["result"] for row in self.by_task(rows, "upstream.echo") if row["state"] == "SUCCEEDED"]
        self.assertEqual(echoed, ["text", {"key": [1, 2]}])
        (when,) = self.by_task(rows, "upstream.when")
        self.assertEqual(when["result"], datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
        self.assertEqual(self.by_task(rows, "upstream.money")[0]["result"], decimal.Decimal("12.50"))
        as_set = self.by_task(rows, "upstream.as_set")[0]
        # A set cannot be JSON: the preview is what is left of it.
        self.assertEqual((as_set["state"], as_set["result"]), ("SUCCEEDED", None))
        self.assertEqual(as_set["result_preview"], "{1, 2, 3}")
        first, retry = self.by_task(rows, "upstream.failing")
        self.assertEqual((first["state"], retry["state"]), ("FAILED", "FAILED"))
        self.assertIsNotNone(first["replaced_by"])
        self.assertIn("ValueError: always", first["error"])

    def test_schedules_and_workers_are_kept(self):
        schedules = self.migrated["schedules"]
        self.assertEqual(set(schedules), {"upstream.daily", "upstream.hourly", "upstream.by_hand"})
        self.assertEqual((schedules["upstream.daily"].hour, schedules["upstream.daily"].minute), (8, 0))
        self.assertEqual(self.drained["schedules"], schedules)  # a worker without schedules leaves them be
        self.assertTrue(self.migrated["workers"])
        self.assertTrue(all(stopped is not None for _, stopped in self.migrated["workers"].values()))

    def test_waiting_rows_stay_waiting_with_json_arguments(self):
        rows = self.migrated
        waiting = {
            row["task_name"]: row for row in rows["executions"].values() if row["state"] in ("QUEUED", "SLEEPING")
        }
        self.assertEqual(waiting["upstream.add"]["args"], [2])
        self.assertEqual(waiting["upstream.add"]["kwargs"], {"b": 3})
        self.assertEqual(
            waiting["upstream.pair"]["args"], [(1, 2), datetime.datetime(2026, 5, 6, 7, 8, tzinfo=UTC)]
        )
        self.assertEqual((waiting["upstream.pair"]["queue"], waiting["upstream.pair"]["priority"]), ("reports", 3))
        self.assertTrue(waiting["upstream.refresh"]["unique"])
        sleeping = waiting["upstream.echo"]
        self.assertEqual((sleeping["state"], sleeping["args"]), ("SLEEPING", ["much later"]))
        mail = waiting["django_toosimple_q.contrib.mail.tasks.send_email"]
        self.assertEqual(mail["state"], "QUEUED")
        (message,) = mail["args"][0]  # upstream's pickled EmailMultiAlternatives, as JSON data
        self.assertEqual(
            (message["subject"], message["to"], message["cc"], message["headers"]),
            ("Subject", ["to@example.com"], ["cc@example.com"], {"X-Fixture": "1"}),
        )
        self.assertEqual(message["alternatives"][0]["mimetype"], "text/html")
        self.assertEqual(message["attachments"][0]["filename"], "notes.txt")

    def test_a_waiting_call_that_cannot_be_converted_is_invalid_with_the_reason(self):
        (invalid,) = [row for row in self.migrated["executions"].values() if row["state"] == "INVALID"]
        self.assertEqual((invalid["task_name"], invalid["args"]), ("upstream.echo", []))
        self.assertIn("the arguments cannot be unpickled", invalid["error"])
        self.assertIn("upstreamapp", invalid["error"])

    def test_a_worker_drains_what_was_waiting(self):
        rows = self.drained["executions"]
        before = self.migrated["executions"]
        ran = {pk: row for pk, row in rows.items() if pk in before and before[pk]["state"] == "QUEUED"}
        self.assertEqual({row["state"] for row in ran.values()}, {"SUCCEEDED"}, ran)
        results = {row["task_name"]: row["result"] for row in ran.values()}
        self.assertEqual(results["upstream.add"], 5)
        self.assertEqual(results["upstream.pair"], ((1, 2), datetime.datetime(2026, 5, 6, 7, 8, tzinfo=UTC)))
        self.assertEqual(results["upstream.refresh"], "key")
        self.assertEqual(results["django_toosimple_q.contrib.mail.tasks.send_email"], 1)  # one message sent
        # A call queued after the upgrade: new rows carry on from upstream's ids
        # (on PostgreSQL, its identity sequences).
        (new,) = [pk for pk in rows if pk not in before]
        self.assertGreater(new, max(before))
        self.assertEqual((rows[new]["state"], rows[new]["result"]), ("SUCCEEDED", 42))
        new_workers = set(self.drained["workers"]) - set(self.migrated["workers"])
        self.assertGreater(min(new_workers), max(self.migrated["workers"]))
        still = [rows[pk]["state"] for pk, row in before.items() if row["state"] in ("SLEEPING", "INVALID")]
        self.assertEqual(sorted(still), ["INVALID", "SLEEPING"])
