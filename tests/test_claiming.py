"""Claiming: atomic, bounded, in claim order, and fast with a long history."""

import datetime
import threading
from unittest import mock, skipUnless

from django.db import connection
from django.core import checks
from django.test import SimpleTestCase, TransactionTestCase
from django.utils import timezone

from django_toosimple_q.models import TaskExec, WorkerStatus
from django_toosimple_q.worker import claiming
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
        claimed = claiming.claim(worker.pk, 2, QueueFilter())
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
        first, second = sorted(claiming.claim(new_worker().pk, 5, QueueFilter()), key=lambda task: task.id)
        self.assertEqual(
            (first.id, first.task_name, first.queue, first.priority, first.retries, first.retry_delay),
            (execution.pk, "tests.retried", "q", 4, 3, 10),
        )
        self.assertEqual((second.args, second.kwargs), ([[1, {"a": 2}]], {"key": "value"}))
        # Claimed, the call is no longer waiting: it may be queued again.
        self.assertIsNone(TaskExec.objects.get(pk=unique.pk).dedup_key)

    def test_claims_only_queued_rows_of_served_queues(self):
        served = tasks.add.using(queue="served").queue(1)
        tasks.add.using(queue="other").queue(2)
        tasks.add.using(queue="served", due=timezone.now() + datetime.timedelta(hours=1)).queue(3)
        worker = new_worker()
        self.assertEqual([task.id for task in claiming.claim(worker.pk, 10, QueueFilter(("served",)))], [served.pk])
        self.assertEqual(claiming.claim(worker.pk, 10, QueueFilter(excluded=("other",))), [])
        self.assertEqual(claiming.claim(worker.pk, 0, QueueFilter()), [])
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
                while batch := claiming.claim(worker.pk, 3, QueueFilter()):
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
        sql, queue_params = claiming._claim_sql(connection.vendor, queue_filter, lock_clause)
        now = connection.ops.adapt_datetimefield_value(timezone.now())
        with connection.cursor() as cursor:
            cursor.execute(f"{explain} {sql}", [now, None, *queue_params, 10])
            return "\n".join(" ".join(str(column) for column in row) for row in cursor.fetchall())

    @skipUnless(connection.vendor == "postgresql", "PostgreSQL's EXPLAIN")
    def test_postgresql_claim_uses_the_partial_index(self):
        for queue_filter in (QueueFilter(), QueueFilter(("default",)), QueueFilter(excluded=("other",))):
            with self.subTest(queue_filter=queue_filter):
                plan = self.claim_plan("EXPLAIN", queue_filter, " FOR UPDATE SKIP LOCKED")
                self.assertIn("toosimpleq_claim_idx", plan)
                self.assertNotIn("Seq Scan", plan)

    @skipUnless(connection.vendor == "sqlite", "SQLite's EXPLAIN QUERY PLAN")
    def test_sqlite_claim_uses_the_partial_index(self):
        for queue_filter in (QueueFilter(), QueueFilter(("default",)), QueueFilter(excluded=("other",))):
            with self.subTest(queue_filter=queue_filter):
                plan = self.claim_plan("EXPLAIN QUERY PLAN", queue_filter)
                self.assertIn("toosimpleq_claim_idx", plan)
                self.assertNotRegex(plan, r"SCAN \S*toosimpleq_taskexec\b(?! USING)")


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
        [claimed] = claiming.claim(worker.pk, 1, QueueFilter())
        finished = claiming.finish(claimed.id, worker.pk, {"state": States.SUCCEEDED, "finished": timezone.now()})
        self.assertEqual(finished, 1)

    def prepared_statements(self):
        """What this connection prepared through the protocol, as psycopg does."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement FROM pg_prepared_statements WHERE NOT from_sql")
            return [statement for (statement,) in cursor.fetchall()]

    def assert_prepared(self, expected):
        statements = self.prepared_statements()
        claim = any("SKIP LOCKED" in statement for statement in statements)
        finish = any(statement.startswith("UPDATE") and "finished" in statement for statement in statements)
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
