"""The admin on a big table: 100,000 executions, a bounded number of queries, and plans that use the indexes."""

from django.contrib.auth.models import User
from django.db import connection
from django.test import TransactionTestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from django_toosimple_q.models import TaskExec, WorkerStatus

EXECUTIONS = reverse("admin:toosimpleq_taskexec_changelist")
OVERVIEW = reverse("admin:toosimpleq_queueoverview_changelist")
TABLE = TaskExec._meta.db_table

ROWS = 100_000

# How each database writes "the row numbered i" as a time: one every ten
# minutes from 2025 on, so that the history spans two years.
CREATED = {
    "sqlite": "strftime('%Y-%m-%d %H:%M:%f', '2025-01-01', '+' || (i * 600) || ' seconds')",
    "postgresql": "TIMESTAMPTZ '2025-01-01 00:00:00+00' + i * INTERVAL '10 minutes'",
}


def insert_history(worker_id):
    """ROWS executions in one INSERT ... SELECT: mostly succeeded, some failed, a few waiting, on three queues."""
    created = CREATED[connection.vendor]
    sql = f"""
        INSERT INTO {TABLE} (
            task_name, args, kwargs, queue, priority, state, due, created, started, finished, worker_id,
            retries, retry_delay, attempt, result_preview, error, stdout, stderr
        )
        WITH RECURSIVE numbers(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM numbers WHERE i < {ROWS})
        SELECT
            'scale.task' || (i % 5), '[]', '{{}}',
            CASE i % 3 WHEN 0 THEN 'default' WHEN 1 THEN 'mail' ELSE 'reports' END,
            0,
            CASE WHEN i > {ROWS} - 50 THEN 'QUEUED' WHEN i % 20 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END,
            {created}, {created},
            CASE WHEN i > {ROWS} - 50 THEN NULL ELSE {created} END,
            CASE WHEN i > {ROWS} - 50 THEN NULL ELSE {created} END,
            CASE WHEN i > {ROWS} - 50 THEN NULL ELSE {worker_id} END,
            0, 0, 1, '', '', 'some output', ''
        FROM numbers
    """
    with connection.cursor() as cursor:
        cursor.execute(sql)
        # What autovacuum does to a big table in production: statistics, and
        # the visibility map that lets PostgreSQL read an index alone.
        cursor.execute(f"VACUUM ANALYZE {TABLE}" if connection.vendor == "postgresql" else f"ANALYZE {TABLE}")


def whole_table_reads(sql, table=TABLE):
    """The steps of the plan of ``sql`` that read the whole of ``table`` (default: the executions), row by row.

    A read in table order that a LIMIT stops is no such step: its cost is
    bounded by the LIMIT, and the planner takes it when the rows it wants
    are common.
    """
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            [[root]] = cursor.fetchone()
            return list(_unbounded_seq_scans(root["Plan"], table, parent=None))
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        details = [detail for _, _, _, detail in cursor.fetchall()]
    # A SCAN walks the table (the B-tree of its ids) or an index in order:
    # without a sort, in a statement with a LIMIT, the walk stops there.
    walks = "LIMIT" in sql and not any("USE TEMP B-TREE FOR ORDER BY" in detail for detail in details)
    return [] if walks else sqlite_table_scans(details, table)


def sqlite_table_scans(details, table):
    """The SCAN steps of ``table`` among ``details`` (SQLite's EXPLAIN QUERY PLAN) that may read all its rows.

    A SCAN of a partial index reads only the rows of its condition (the
    waiting executions, the workers not stopped): it is not one of them.
    """
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA index_list({table})")
        partial = {name for _, name, _, _, is_partial in cursor.fetchall() if is_partial}
    return [
        detail for detail in details if detail.split(" ")[:2] == ["SCAN", table] and detail.split(" ")[-1] not in partial
    ]


def _unbounded_seq_scans(node, table, parent):
    if node["Node Type"] == "Seq Scan" and node["Relation Name"] == table and parent != "Limit":
        yield node
    for child in node.get("Plans", []):
        yield from _unbounded_seq_scans(child, table, node["Node Type"])


class BigTableTests(TransactionTestCase):
    """One test, so that the table is filled once (a TransactionTestCase empties it after each)."""

    PAGES = {
        "the list": (EXECUTIONS, {}),
        "a state": (EXECUTIONS, {"state__exact": "FAILED"}),
        "a rare state": (EXECUTIONS, {"state__exact": "QUEUED"}),
        "a queue": (EXECUTIONS, {"queue": "mail"}),
        "a task": (EXECUTIONS, {"task_name": "scale.task3"}),
        "a worker": (EXECUTIONS, {"worker__id__exact": "1"}),
        "a year": (EXECUTIONS, {"created__year": "2026"}),
        "a month": (EXECUTIONS, {"created__year": "2026", "created__month": "3"}),
        "the overview": (OVERVIEW, {}),
    }

    def setUp(self):
        worker = WorkerStatus.objects.create(label="scale", hostname="h", pid=1)
        insert_history(worker.pk)
        self.client.force_login(User.objects.create_superuser("admin", password="pw"))

    def load(self, url, query):
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(url, query)
        self.assertEqual(response.status_code, 200)
        return response, [captured["sql"] for captured in queries]

    def test_pages_on_a_big_table(self):
        self.assertEqual(TaskExec.objects.count(), ROWS)
        for name, (url, query) in self.PAGES.items():
            response, queries = self.load(url, query)
            with self.subTest(name):
                self.assertLessEqual(len(queries), 12)
            for sql in queries:
                if TABLE in sql:
                    with self.subTest(name, sql=sql):
                        self.assertEqual(whole_table_reads(sql), [])
        # The list counts no further than its paginator's cap.
        response, _ = self.load(EXECUTIONS, {})
        self.assertContains(response, "more than 10000")
