"""``manage.py queue_health`` and ``manage.py queue_stats``: for probes and for people."""

import datetime
import io

from django.core.management import CommandError, call_command
from django.db import OperationalError
from django.test import TestCase
from django.utils import timezone
from unittest import mock

from django_toosimple_q import stats
from django_toosimple_q.models import TaskExec, WorkerStatus

States = TaskExec.States


def waiting(queue="default", *, minutes_ago=0, count=1):
    created = timezone.now() - datetime.timedelta(minutes=minutes_ago)
    for _ in range(count):
        TaskExec.objects.create(task_name="tests.add", queue=queue, created=created, due=created)


def online_worker(*queues):
    return WorkerStatus.objects.create(label="w", hostname="h", pid=1, queues=list(queues))


def health(*args):
    """(exit code, the one line it wrote)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("queue_health", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit:
        code = exit.code
    lines = (out.getvalue() + err.getvalue()).strip().splitlines()
    return code, lines[0] if lines else ""


class QueueHealthTests(TestCase):
    def test_ok_with_a_summary(self):
        waiting(count=2)
        online_worker()
        self.assertEqual(
            health("--max-backlog", "5", "--min-workers", "1"), (0, "ok: 2 waiting, oldest 0s, 1 worker(s) online")
        )

    def test_backlog(self):
        waiting(count=3)
        self.assertEqual(health("--max-backlog", "2"), (1, "unhealthy: 3 tasks waiting, more than 2"))

    def test_oldest_waiting_age(self):
        waiting(minutes_ago=15)
        code, line = health("--max-age", "10m")
        self.assertEqual(code, 1)
        self.assertRegex(line, r"^unhealthy: the oldest waiting task is 15m\d*s? old, older than 10m$")
        self.assertEqual(health("--max-age", "20m")[0], 0)

    def test_min_workers_per_queue(self):
        online_worker("mail")
        self.assertEqual(health("--min-workers", "1")[0], 0)
        self.assertEqual(
            health("--min-workers", "1", "--queue", "reports"),
            (1, "unhealthy (reports): 0 worker(s) online, fewer than 1"),
        )
        self.assertEqual(health("--min-workers", "1", "--queue", "mail")[0], 0)

    def test_a_queue_with_no_rows_served_by_a_worker_of_every_queue(self):
        online_worker()
        self.assertEqual(
            health("--queue", "default", "--min-workers", "1"),
            (0, "ok (default): 0 waiting, oldest -, 1 worker(s) online"),
        )

    def test_only_the_queues_named(self):
        waiting("mail", count=5)
        waiting("default", count=1)
        self.assertEqual(health("--max-backlog", "2", "--queue", "default")[0], 0)

    def test_several_reasons_on_one_line(self):
        waiting(count=3, minutes_ago=30)
        code, line = health("--max-backlog", "1", "--max-age", "1m", "--min-workers", "2")
        self.assertEqual(code, 1)
        self.assertEqual(line.count(";"), 2, line)

    def test_a_database_that_cannot_be_read(self):
        with mock.patch.object(stats, "collect", side_effect=OperationalError("connection refused")):
            self.assertEqual(health(), (1, "unhealthy: the database cannot be read (connection refused)"))

    def test_an_age_it_cannot_read(self):
        with self.assertRaises(CommandError):
            health("--max-age", "soon")


class QueueStatsCommandTests(TestCase):
    def test_a_row_per_queue(self):
        waiting("default", minutes_ago=90, count=2)
        waiting("mail")
        run = TaskExec.objects.create(task_name="tests.add", queue="mail", state=States.SUCCEEDED)
        TaskExec.objects.filter(pk=run.pk).update(
            finished=timezone.now(), started=timezone.now() - datetime.timedelta(seconds=0.2)
        )
        online_worker()
        out = io.StringIO()
        call_command("queue_stats", stdout=out)
        header, rule, default, mail, workers = out.getvalue().splitlines()
        # The live states count the rows now; the finished ones, and the run times, the last hour.
        self.assertEqual(
            header.split(),
            ["queue", "SLEEPING", "QUEUED", "PROCESSING", "oldest", "waiting", "SUCCEEDED", "60m", "FAILED", "60m",
             "INTERRUPTED", "60m", "INVALID", "60m", "CANCELLED", "60m", "done", "5m", "failed", "5m",
             "workers", "p50", "p95"],
        )
        self.assertEqual(default.split(), ["default", "0", "2", "0", "1h30m", *["0"] * 7, "1", "-", "-"])
        self.assertEqual(
            mail.split(), ["mail", "0", "1", "0", "0s", "1", *["0"] * 4, "1", "0", "1", "<=0.25s", "<=0.25s"]
        )
        self.assertEqual(workers, "1 worker(s) online")
