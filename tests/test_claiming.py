"""Claiming: atomic, bounded, in claim order, and fast with a long history."""

import datetime
import threading
from unittest import mock, skipUnless

from django.db import connection, transaction
from django.core import checks
from django.test import SimpleTestCase, TransactionTestCase
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_toosimple_q import store
from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker.claiming import QueueFilter

from .testapp import tasks

States = TaskExec.States


def new_worker():
    return WorkerStatus.objects.create(label="test", hostname="test", pid=0)


class ClaimTests(TransactionTestCase):
    # TransactionTestCase: on SQLite, claiming opens its own transaction.

    def test_claims_at_most_the_limit_in_claim_order(self):
        low = [tasks.add.queue(i) for i in range(5)]
        high = tasks.add.using(priority=1).queue(9)
        worker = new_worker()
        claimed = store.claim(worker.pk, 2, QueueFilter())
        self.assertEqual({task.id for task in claimed}, {high.pk, low[0].pk})
        processing = TaskExec.objects.filter(state=States.PROCESSING)
        self.assertEqual(sorted(processing.values_list("id", flat=True)), sorted([high.pk, low[0].pk]))
        self.assertEqual(TaskExec.objects.filter(state=States.QUEUED).count(), 4)
        row = TaskExec.objects.get(pk=high.pk)
        self.assertEqual(row.worker, worker)
        self.assertIsNotNone(row.started)

    def test_claimed_task_carries_what_running_it_needs(self):
        execution = tasks.retried.using(queue="q", priority=4).queue()
        unique = tasks.unique.queue([1, {"a": 2}], key="value")
        first, second = sorted(store.claim(new_worker().pk, 5, QueueFilter()), key=lambda task: task.id)
        self.assertEqual(
            (first.id, first.task_name, first.queue, first.priority, first.retries, first.retry_delay),
            (execution.pk, "tests.retried", "q", 4, 3, 10),
        )
        self.assertEqual((second.args, second.kwargs), ([[1, {"a": 2}]], {"key": "value"}))
        # Claimed, the call is no longer waiting: it may be queued again.
        self.assertIsNone(TaskExec.objects.get(pk=unique.pk).dedup_key)

    def test_claimed_task_says_whether_it_replaces_an_interrupted_run(self):
        interrupted = tasks.add.queue(1)
        failed = tasks.add.queue(2)
        store.claim(new_worker().pk, 2, QueueFilter())
        interrupted_again = store.requeue(TaskExec.objects.get(pk=interrupted.pk))
        retry = store.requeue(TaskExec.objects.get(pk=failed.pk))
        TaskExec.objects.filter(pk=interrupted.pk).update(state=States.INTERRUPTED, replaced_by=interrupted_again)
        TaskExec.objects.filter(pk=failed.pk).update(state=States.FAILED, replaced_by=retry)
        fresh = tasks.add.queue(3)
        expected = {interrupted_again.pk: True, retry.pk: False, fresh.pk: False}
        claimed = store.claim(new_worker().pk, 5, QueueFilter())
        self.assertEqual({task.id: bool(task.interrupted_before) for task in claimed}, expected)
        TaskExec.objects.filter(pk__in=expected).update(state=States.QUEUED)
        claimed = store.claim_these(list(expected), new_worker().pk)
        self.assertEqual({task.id: bool(task.interrupted_before) for task in claimed}, expected)

    def test_claims_only_queued_rows_of_served_queues(self):
        served = tasks.add.using(queue="served").queue(1)
        tasks.add.using(queue="other").queue(2)
        tasks.add.using(queue="served", due=timezone.now() + datetime.timedelta(hours=1)).queue(3)
        worker = new_worker()
        self.assertEqual([task.id for task in store.claim(worker.pk, 10, QueueFilter(("served",)))], [served.pk])
        self.assertEqual(store.claim(worker.pk, 10, QueueFilter(excluded=("other",))), [])
        self.assertEqual(store.claim(worker.pk, 0, QueueFilter()), [])
        self.assertEqual(TaskExec.objects.filter(state=States.PROCESSING).count(), 1)

    def test_concurrent_claimers_never_share_a_task(self):
        count, claimers = 300, 8
        TaskExec.objects.bulk_create([TaskExec(task_name="tests.add", args=[i]) for i in range(count)])
        workers = [new_worker() for _ in range(claimers)]
        claimed = {worker.pk: [] for worker in workers}
        errors = []
        start = threading.Barrier(claimers, timeout=30)

        def claim_until_none_left(worker):
            try:
                start.wait()
                while batch := store.claim(worker.pk, 3, QueueFilter()):
                    self.assertLessEqual(len(batch), 3)
                    claimed[worker.pk] += [task.id for task in batch]
            except Exception as error:  # reported below: a thread cannot fail the test
                errors.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=claim_until_none_left, args=(worker,)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertEqual(errors, [])
        all_claimed = [task_id for ids in claimed.values() for task_id in ids]
        self.assertEqual(len(all_claimed), count)
        self.assertEqual(len(set(all_claimed)), count)
        for worker_id, ids in claimed.items():
            self.assertEqual(TaskExec.objects.filter(worker_id=worker_id, state=States.PROCESSING).count(), len(ids))


def explain_claim(explain, queue_filter, lock_clause="", limit=10):
    """The rows of ``explain`` (EXPLAIN and its options) of the claim statement of ``queue_filter``."""
    queues = store._queues_to_probe(connection, queue_filter)
    sql = store._claim_sql(connection.alias, store._probes(queues), lock_clause)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(f"{explain} {sql}", [now, None, *store._selection_params(queues, limit)])
        return cursor.fetchall()


class ServedQueuesTests(TransactionTestCase):
    """A worker that serves some queues claims them in the global claim order."""

    def setUp(self):
        # Queued in an order that is not the claim order.
        self.low = tasks.add.using(queue="b").queue(4)
        self.old = tasks.add.using(queue="a", priority=1).queue(1)
        self.newer = tasks.add.using(queue="a", priority=1).queue(3)
        self.urgent = tasks.add.using(queue="b", priority=5).queue(2)
        self.other = tasks.add.using(queue="c", priority=9).queue(5)

    def claimed_ids(self, queue_filter, limit):
        return [task.id for task in store.claim(new_worker().pk, limit, queue_filter)]

    def test_served_queues_merge_in_priority_then_due_then_id_order(self):
        for queue_filter in (QueueFilter(("a", "b")), QueueFilter(("b", "a")), QueueFilter(excluded=("c",))):
            with self.subTest(queue_filter=queue_filter):
                self.assertEqual(
                    sorted(self.claimed_ids(queue_filter, 3), key=self.order_of),
                    [self.urgent.pk, self.old.pk, self.newer.pk],
                )
                TaskExec.objects.filter(state=States.PROCESSING).update(state=States.QUEUED, worker=None)

    def order_of(self, pk):
        return [self.urgent.pk, self.old.pk, self.newer.pk, self.low.pk].index(pk)

    def test_excluding_every_waiting_queue_claims_nothing(self):
        self.assertEqual(self.claimed_ids(QueueFilter(excluded=("a", "b", "c")), 10), [])
        self.assertEqual(self.claimed_ids(QueueFilter(("nowhere",)), 10), [])
        self.assertEqual(TaskExec.objects.filter(state=States.PROCESSING).count(), 0)

    def test_a_deep_queue_does_not_starve_the_limit(self):
        """Each queue's probe reads up to the limit: the merge still fills it from one queue."""
        self.assertEqual(len(self.claimed_ids(QueueFilter(("a",)), 5)), 2)
        self.assertEqual(len(self.claimed_ids(QueueFilter(excluded=("a",)), 5)), 3)

    def test_waiting_work_is_that_of_the_served_queues(self):
        TaskExec.objects.filter(queue="c").update(state=States.SUCCEEDED)
        self.assertTrue(store.has_waiting_work(QueueFilter(excluded=("a",))))
        self.assertFalse(store.has_waiting_work(QueueFilter(excluded=("a", "b"))))
        self.assertFalse(store.has_waiting_work(QueueFilter(("c",))))
        tasks.add.using(queue="c", due=timezone.now() - datetime.timedelta(seconds=1)).queue(6)
        TaskExec.objects.filter(queue="c").update(state=States.SLEEPING)
        self.assertTrue(store.has_waiting_work(QueueFilter(("c",))))
        self.assertTrue(store.has_waiting_work(QueueFilter(excluded=("a", "b"))))


# Rows enough that reading them would show in a plan; inserted in one statement.
BACKLOG = 30_000
TABLE = TaskExec._meta.db_table


def insert_rows(queue, rows, state=States.QUEUED):
    """``rows`` executions on ``queue`` in ``state``, in one INSERT ... SELECT."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {TABLE} (
                task_name, args, kwargs, queue, priority, state, due, created,
                retries, retry_delay, attempt, result_preview, error, stdout, stderr
            )
            WITH RECURSIVE numbers(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM numbers WHERE i < %s)
            SELECT 'tests.add', '[]', '{{}}', %s, i %% 3, %s, %s, %s, 0, 0, 1, '', '', '', ''
            FROM numbers
            """,
            [rows, queue, state, timezone.now(), timezone.now()],
        )


class DeepBacklogPlanTests(TransactionTestCase):
    """With a deep backlog in ``bulk``, the other queues' workers never read its rows, nor their own history."""

    FILTERS = {
        "--queue urgent": QueueFilter(("urgent",)),
        "--queue urgent --queue mail": QueueFilter(("urgent", "mail")),
        "--exclude_queue bulk": QueueFilter(excluded=("bulk",)),
    }

    def setUp(self):
        insert_rows("bulk", BACKLOG)
        insert_rows("urgent", BACKLOG, States.SUCCEEDED)
        tasks.add.using(queue="urgent").queue(1)
        tasks.add.using(queue="mail", priority=2).queue(2)
        with connection.cursor() as cursor:
            # What autovacuum does to a big table: statistics, and the visibility map.
            cursor.execute(f"VACUUM ANALYZE {TABLE}" if connection.vendor == "postgresql" else f"ANALYZE {TABLE}")

    @skipUnless(connection.vendor == "postgresql", "PostgreSQL's EXPLAIN ANALYZE")
    def test_postgresql_claim_reads_only_the_served_queues(self):
        for name, queue_filter in self.FILTERS.items():
            with self.subTest(name):
                with transaction.atomic():  # EXPLAIN ANALYZE runs the claim: undone below
                    [[[root]]] = explain_claim("EXPLAIN (ANALYZE, FORMAT JSON)", queue_filter, " FOR UPDATE SKIP LOCKED")
                    transaction.set_rollback(True)
                scans = list(table_scans(root["Plan"]))
                self.assertTrue(scans)
                for scan in scans:
                    self.assertNotEqual(scan["Node Type"], "Seq Scan")
                    # Rows read, whether kept or filtered out: a handful, not the backlog.
                    read = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) + scan.get("Rows Removed by Index Recheck", 0)
                    self.assertLess(read * scan["Actual Loops"], 10, scan)

    @skipUnless(connection.vendor == "sqlite", "SQLite's EXPLAIN QUERY PLAN")
    def test_sqlite_claim_reads_only_the_served_queues(self):
        for name, queue_filter in self.FILTERS.items():
            with self.subTest(name):
                details = [row[3] for row in explain_claim("EXPLAIN QUERY PLAN", queue_filter)]
                self.assert_sqlite_reads_by_queue_or_id(details)

    def test_the_waiting_work_check_reads_only_the_served_queues(self):
        for name, queue_filter in self.FILTERS.items():
            with self.subTest(name):
                with CaptureQueriesContext(connection) as queries:
                    self.assertTrue(store.has_waiting_work(queue_filter))
                for query in queries:
                    with connection.cursor() as cursor:
                        if connection.vendor == "postgresql":
                            cursor.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {query['sql']}")
                            [[[root]]] = cursor.fetchall()
                            for scan in table_scans(root["Plan"]):
                                self.assertNotEqual(scan["Node Type"], "Seq Scan", query["sql"])
                                self.assertLess(scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0), 10, scan)
                        else:
                            cursor.execute(f"EXPLAIN QUERY PLAN {query['sql']}")
                            self.assert_sqlite_reads_by_queue_or_id([row[3] for row in cursor.fetchall()])

    def assert_sqlite_reads_by_queue_or_id(self, details):
        reads = [detail for detail in details if TABLE in detail]
        self.assertTrue(reads)
        for detail in reads:
            # Seeks by queue, by id, or of due SLEEPING rows; a SEARCH with
            # no constraint is the first entry of an index (MIN()). Never a SCAN.
            self.assertRegex(
                detail,
                rf"^SEARCH {TABLE} USING (INTEGER PRIMARY KEY|(COVERING )?INDEX \S+( \((queue|state=\? AND id|due)|$))",
            )


def table_scans(node):
    """The nodes of a PostgreSQL plan that read the execution table or its indexes."""
    if node.get("Relation Name") == TABLE:
        yield node
    for child in node.get("Plans", []):
        yield from table_scans(child)


class ClaimPlanTests(TransactionTestCase):
    """The claim reads the partial index of waiting rows, not the history."""

    HISTORY = 20_000

    def setUp(self):
        now = timezone.now()
        TaskExec.objects.bulk_create(
            [
                TaskExec(task_name="tests.add", args=[i], state=States.SUCCEEDED, due=now, finished=now)
                for i in range(self.HISTORY)
            ],
            batch_size=2000,
        )
        for i in range(5):
            tasks.add.queue(i)
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(TaskExec._meta.db_table)}")

    def claim_plan(self, explain, queue_filter, lock_clause=""):
        return "\n".join(" ".join(str(column) for column in row) for row in explain_claim(explain, queue_filter, lock_clause))

    @skipUnless(connection.vendor == "postgresql", "PostgreSQL's EXPLAIN")
    def test_postgresql_claim_uses_the_partial_index(self):
        for queue_filter in (QueueFilter(), QueueFilter(("default",)), QueueFilter(excluded=("other",))):
            with self.subTest(queue_filter=queue_filter):
                plan = self.claim_plan("EXPLAIN", queue_filter, " FOR UPDATE SKIP LOCKED")
                self.assertRegex(plan, "toosimpleq_(queue_)?claim_idx")
                self.assertNotIn("Seq Scan", plan)

    @skipUnless(connection.vendor == "sqlite", "SQLite's EXPLAIN QUERY PLAN")
    def test_sqlite_claim_uses_the_partial_index(self):
        for queue_filter in (QueueFilter(), QueueFilter(("default",)), QueueFilter(excluded=("other",))):
            with self.subTest(queue_filter=queue_filter):
                plan = self.claim_plan("EXPLAIN QUERY PLAN", queue_filter)
                self.assertRegex(plan, "toosimpleq_(queue_)?claim_idx")
                self.assertNotRegex(plan, r"SCAN \S*toosimpleq_taskexec\b(?! USING)")

    @skipUnless(connection.vendor == "sqlite", "SQLite's EXPLAIN QUERY PLAN")
    def test_sqlite_claim_uses_the_partial_index_without_statistics(self):
        # Django never runs ANALYZE: most SQLite databases have no statistics,
        # and the planner would then read every QUEUED row and sort them.
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM sqlite_stat1")
            cursor.execute("ANALYZE sqlite_schema")  # the planner forgets the statistics
        plan = self.claim_plan("EXPLAIN QUERY PLAN", QueueFilter())
        self.assertIn("SCAN toosimpleq_taskexec USING INDEX toosimpleq_claim_idx", plan)
        self.assertNotIn("TEMP B-TREE", plan)
        for queue_filter in (QueueFilter(("default",)), QueueFilter(excluded=("other",))):
            with self.subTest(queue_filter=queue_filter):
                plan = self.claim_plan("EXPLAIN QUERY PLAN", queue_filter)
                self.assertIn("SEARCH toosimpleq_taskexec USING INDEX toosimpleq_queue_claim_idx (queue=?)", plan)


@skipUnless(
    connection.vendor == "postgresql" and connection.Database.__name__ == "psycopg",
    "psycopg's prepared statements",
)
class PreparedStatementTests(TransactionTestCase):
    """On PostgreSQL the claim and finish are planned once per connection, unless a pooler forbids it."""

    def setUp(self):
        connection.close()  # each test decides on a connection of its own

    def tearDown(self):
        connection.close()

    def claim_and_finish(self):
        tasks.add.queue(1)
        worker = new_worker()
        [claimed] = store.claim(worker.pk, 1, QueueFilter())
        finished = store.finish(claimed.id, worker.pk, {"state": States.SUCCEEDED, "finished": timezone.now()})
        self.assertEqual(finished, 1)

    def prepared_statements(self):
        """What this connection prepared through the protocol, as psycopg does."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
            return [statement for (statement,) in cursor.fetchall()]

    def assert_prepared(self, expected):
        statements = self.prepared_statements()
        claim = any("SKIP LOCKED" in statement for statement in statements)
        finish = any("UPDATE" in statement and "finished" in statement for statement in statements)
        self.assertEqual((claim, finish), (expected, expected), statements)

    def test_claim_and_finish_are_prepared(self):
        self.claim_and_finish()
        self.assert_prepared(True)

    def test_the_other_statements_of_the_connection_are_left_as_django_configured_them(self):
        self.claim_and_finish()
        # As Django's cursors with OPTIONS server_side_binding run them: bound
        # on the server, where psycopg would prepare them on its own.
        for _ in range(20):
            with connection.Database.Cursor(connection.connection) as cursor:
                cursor.execute("SELECT count(*) FROM toosimpleq_taskexec WHERE priority > %s", [0])
        self.assertFalse([statement for statement in self.prepared_statements() if "count" in statement])

    def test_behind_a_pooler_in_transaction_mode_nothing_is_prepared(self):
        # DISABLE_SERVER_SIDE_CURSORS is what Django asks for behind PgBouncer in transaction mode.
        with mock.patch.dict(connection.settings_dict, {"DISABLE_SERVER_SIDE_CURSORS": True}):
            self.claim_and_finish()
            self.assert_prepared(False)

    def test_the_setting_decides_when_given(self):
        for setting, pooled, expected in ((False, False, False), (True, True, True)):
            with self.subTest(setting=setting, disable_server_side_cursors=pooled):
                connection.close()
                with (
                    self.settings(TOOSIMPLEQ_PREPARED_STATEMENTS=setting),
                    mock.patch.dict(connection.settings_dict, {"DISABLE_SERVER_SIDE_CURSORS": pooled}),
                ):
                    self.claim_and_finish()
                    self.assert_prepared(expected)


class PreparedStatementsSettingCheckTests(SimpleTestCase):
    def test_only_none_true_or_false(self):
        for value in ("no", 0, 1, "False"):
            with self.subTest(value=value), self.settings(TOOSIMPLEQ_PREPARED_STATEMENTS=value):
                errors = checks.run_checks(tags=["toosimpleq"])
                self.assertEqual([error.id for error in errors], ["toosimpleq.E003"])
                self.assertIn(f"must be None, True or False, not {value!r}", errors[0].msg)
        for value in (None, True, False):
            with self.subTest(value=value), self.settings(TOOSIMPLEQ_PREPARED_STATEMENTS=value):
                self.assertEqual(checks.run_checks(tags=["toosimpleq"]), [])
