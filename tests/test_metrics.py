"""Prometheus metrics: the collector, the view and the counters the workers keep."""

import datetime

from django.contrib.auth.models import User
from django.db import connection
from django.test import TransactionTestCase, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from django_toosimple_q import stats
from django_toosimple_q.metrics import WORKER_SERIES_KEPT, QueueCollector
from django_toosimple_q.models import TaskExec, WorkerStatus, prune_executions
from django_toosimple_q.worker import Worker

from .test_admin_scale import ROWS, TABLE, insert_history, whole_table_reads
from .testapp import tasks

States = TaskExec.States

def scrape():
    """The samples of the collector: {(name, frozenset(labels)): value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    text = generate_latest(registry).decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def run_worker(label):
    worker = Worker(until_done=True, schedules=False, label=label)
    worker.run()
    return worker


class CollectorTests(TransactionTestCase):
    def test_gauges_of_the_queues_and_counters_of_the_workers(self):
        tasks.add.queue(1, b=2)
        tasks.fail.queue()
        run_worker("w1")
        tasks.configured.queue("x")  # waits, on "reports"
        samples = scrape()
        rows = "toosimpleq_executions"
        self.assertEqual(samples[(rows, frozenset({"queue": "reports", "state": "QUEUED"}.items()))], 1)
        self.assertEqual(samples[(rows, frozenset({"queue": "reports", "state": "PROCESSING"}.items()))], 0)
        # The finished rows are no gauge (the history only grows): the runs' counters count them.
        self.assertEqual({dict(labels)["state"] for name, labels in samples if name == rows}, set(stats.LIVE_STATES))
        self.assertIn(("toosimpleq_oldest_waiting_seconds", frozenset({"queue": "reports"}.items())), samples)
        runs = {"queue": "default", "worker": "w1"}
        self.assertEqual(samples[("toosimpleq_runs_total", frozenset({**runs, "state": "SUCCEEDED"}.items()))], 1)
        self.assertEqual(samples[("toosimpleq_runs_total", frozenset({**runs, "state": "FAILED"}.items()))], 1)
        self.assertEqual(samples[("toosimpleq_run_time_seconds_count", frozenset(runs.items()))], 2)
        self.assertEqual(samples[("toosimpleq_run_time_seconds_bucket", frozenset({**runs, "le": "+Inf"}.items()))], 2)
        self.assertEqual(samples[("toosimpleq_abandoned_threads_total", frozenset({"worker": "w1"}.items()))], 0)

    def test_counters_only_grow_when_executions_are_pruned(self):
        tasks.add.queue(1, b=2)
        run_worker("w1")
        prune_executions(timezone.now())
        self.assertEqual(TaskExec.objects.count(), 0)
        key = ("toosimpleq_runs_total", frozenset({"queue": "default", "state": "SUCCEEDED", "worker": "w1"}.items()))
        self.assertEqual(scrape()[key], 1)

    def test_the_series_of_a_worker_gone_for_long_end(self):
        tasks.add.queue(1, b=2)
        run_worker("stopped just now")
        long_ago = timezone.now() - WORKER_SERIES_KEPT - datetime.timedelta(minutes=1)
        counted = {"runs": {"default": {"SUCCEEDED": 1}}}
        WorkerStatus.objects.create(label="online", hostname="h", pid=1, counters=counted)
        WorkerStatus.objects.create(
            label="stopped long ago", hostname="h", pid=1, last_tick=long_ago, stopped=long_ago, counters=counted
        )
        WorkerStatus.objects.create(label="silent long", hostname="h", pid=1, last_tick=long_ago, counters=counted)
        workers = {dict(labels)["worker"] for name, labels in scrape() if name == "toosimpleq_runs_total"}
        self.assertEqual(workers, {"stopped just now", "online"})

    def test_a_worker_writes_its_counters_at_each_heartbeat(self):
        tasks.add.queue(1, b=2)
        worker = run_worker("w1")
        counters = WorkerStatus.objects.get(pk=worker.status.pk).counters
        self.assertEqual(counters["runs"], {"default": {"SUCCEEDED": 1}})
        self.assertEqual(sum(counters["run_times"]["default"]["buckets"]), 1)


class ViewTests(TransactionTestCase):
    def test_not_public(self):
        self.assertEqual(self.client.get("/metrics/").status_code, 403)
        self.client.force_login(User.objects.create_user("someone", password="pw"))
        self.assertEqual(self.client.get("/metrics/").status_code, 403)

    def test_staff(self):
        self.client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
        response = self.client.get("/metrics/")
        self.assertEqual(response.status_code, 200)
        self.assertIn(b"toosimpleq_workers_online", response.content)
        self.assertTrue(response["Content-Type"].startswith("text/plain"))

    @override_settings(TOOSIMPLEQ_METRICS_TOKEN="s3cret")
    def test_token(self):
        self.assertEqual(self.client.get("/metrics/", headers={"Authorization": "Bearer s3cret"}).status_code, 200)
        self.assertEqual(self.client.get("/metrics/", headers={"Authorization": "Bearer wrong"}).status_code, 403)


class BigTableTests(TransactionTestCase):
    def test_a_scrape_is_a_fixed_number_of_queries_that_use_the_indexes(self):
        insert_history(WorkerStatus.objects.create(label="scale", hostname="h", pid=1).pk)
        self.assertEqual(TaskExec.objects.count(), ROWS)
        with CaptureQueriesContext(connection) as queries:
            scrape()
        statements = [captured["sql"] for captured in queries]
        self.assertEqual(len(statements), 5)  # the live states, the workers online, their counters: no history, no schedule
        for sql in statements:
            if TABLE in sql:
                with self.subTest(sql=sql):
                    self.assertEqual(whole_table_reads(sql), [])
