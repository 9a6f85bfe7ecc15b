"""Growth over months: with a long history of finished executions and of stopped workers, what runs often reads indexes.

The claim, the admin's lists and overview, ``queue_health``,
``queue_stats`` and the metrics must not read the whole history: their
plans (EXPLAIN) are checked on tables filled the way months of traffic fill
them.
"""

import io

from django.contrib.auth.models import User
from django.core.management import call_command
from django.db import connection
from django.test import TransactionTestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_toosimple_q.models import ScheduleExec, WorkerStatus
from django_toosimple_q.worker.claiming import QueueFilter

from .test_admin_scale import CREATED, TABLE, sqlite_table_scans, whole_table_reads
from .test_claiming import explain_claim
from .test_metrics import scrape
from .testapp import tasks

EXECUTIONS = 200_000
WORKERS = 20_000
WORKER_TABLE = WorkerStatus._meta.db_table
GROWING_TABLES = (TABLE, WORKER_TABLE)
# A worker's timeout as each database stores a duration.
TIMEOUT = {"sqlite": "600000000", "postgresql": "INTERVAL '600 seconds'"}


def insert_months_of_history():
    """EXECUTIONS finished executions on three queues, and WORKERS workers long stopped, in two INSERT ... SELECT.

    Fewer than months of traffic leave, as many as make the planner choose as it would then.
    """
    created = CREATED[connection.vendor]
    numbers = "WITH RECURSIVE numbers(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM numbers WHERE i < {})"
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {WORKER_TABLE} (
                label, hostname, pid, threads, queues, excluded_queues, started, last_tick, timeout, stopped,
                exit_code, exit_log, abandoned_threads, counters
            )
            {numbers.format(WORKERS)}
            SELECT 'worker' || i, 'host', i, 1, '[]', '[]', {created}, {created}, {TIMEOUT[connection.vendor]}, {created}, 0, '', 0, '{{}}'
            FROM numbers
            """
        )
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (
                task_name, args, kwargs, queue, priority, state, due, created, started, finished,
                retries, retry_delay, attempt, result_preview, error, stdout, stderr
            )
            {numbers.format(EXECUTIONS)}
            SELECT
                'growth.task' || (i % 5), '[]', '{{}}',
                CASE i % 3 WHEN 0 THEN 'default' WHEN 1 THEN 'mail' ELSE 'reports' END,
                0, CASE WHEN i % 20 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
                {created}, {created}, {created}, {created}, 0, 0, 1, '', '', '', ''
            FROM numbers
            """
        )
        for table in GROWING_TABLES:
            # What autovacuum does to a big table: statistics, and the visibility map.
            cursor.execute(f"VACUUM ANALYZE {table}" if connection.vendor == "postgresql" else f"ANALYZE {table}")


class MonthsOfHistoryTests(TransactionTestCase):
    """One test, so that the tables are filled once (a TransactionTestCase empties them after each)."""

    def setUp(self):
        insert_months_of_history()
        WorkerStatus.objects.create(label="online", hostname="h", pid=1)
        ScheduleExec.objects.create(name="growth.schedule", task_name="tests.add", cron="* * * * *")
        for queue in ("default", "mail"):
            tasks.add.using(queue=queue).queue(1)
        self.client.force_login(User.objects.create_superuser("admin", password="pw"))

    def history_reads(self, statements):
        """The steps of the plans of ``statements`` that read a growing table whole, by statement."""
        return {
            sql[:200]: reads
            for sql in statements
            for reads in [[read for table in GROWING_TABLES if table in sql for read in whole_table_reads(sql, table)]]
            if reads
        }

    maxDiff = None

    def captured(self, action):
        with CaptureQueriesContext(connection) as queries:
            action()
        return [query["sql"] for query in queries]

    def admin_list(self, model):
        return lambda: self.client.get(reverse(f"admin:toosimpleq_{model}_changelist"))

    def claim_history_reads(self, queue_filter):
        if connection.vendor == "postgresql":
            return "Seq Scan" in str(explain_claim("EXPLAIN (FORMAT JSON)", queue_filter))
        return sqlite_table_scans([row[3] for row in explain_claim("EXPLAIN QUERY PLAN", queue_filter)], TABLE)

    def test_what_runs_often_reads_no_history(self):
        for name, queue_filter in {"every queue": QueueFilter(), "--queue mail": QueueFilter(("mail",))}.items():
            with self.subTest(f"the claim of {name}"):
                self.assertFalse(self.claim_history_reads(queue_filter))
        surfaces = {
            "the executions' list": self.admin_list("taskexec"),
            "the workers' list": self.admin_list("workerstatus"),
            "the schedules' list": self.admin_list("scheduleexec"),
            "the overview": self.admin_list("queueoverview"),
            "queue_health": lambda: call_command("queue_health", "--min-workers", "1", stdout=io.StringIO()),
            "queue_stats": lambda: call_command("queue_stats", stdout=io.StringIO()),
            "the metrics": scrape,
        }
        for name, action in surfaces.items():
            with self.subTest(name):
                self.assertEqual(self.history_reads(self.captured(action)), {})
