"""Prometheus metrics of the queues, with prometheus_client (``pip install django-toosimple-q[metrics]``).

``QueueCollector`` joins an app's own registry, and so its ``/metrics``::

    from prometheus_client import REGISTRY
    from django_toosimple_q.metrics import QueueCollector

    REGISTRY.register(QueueCollector())

or ``metrics_view`` serves the queue's metrics alone, to staff users or to
the bearer of TOOSIMPLEQ_METRICS_TOKEN::

    path("queue-metrics/", metrics_view)

Gauges are read from the database at each scrape (``stats.collect()``):
the executions waiting and running, never the finished history. Counters
come from the workers, each counting what it ran in its WorkerStatus row:
the series of each worker only grows, and pruning old executions never sets
one back. A worker's series are exposed while it beats and for
WORKER_SERIES_KEPT after it stopped (or fell silent), long enough for any
scrape to read its last values; then they end, as a restarted process's do.
"""

import datetime
import hmac

from django.db.models import Q
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from . import conf, stats
from .models import WorkerStatus

# The longest window of the statistics: a worker gone for longer is read no more.
WORKER_SERIES_KEPT = datetime.timedelta(minutes=stats.RECENT_WINDOWS[-1])


class QueueCollector:
    """A prometheus_client collector: the queues as the database holds them, and what the workers counted."""

    def collect(self):
        snapshot = stats.collect(recent=False)
        executions = GaugeMetricFamily(
            "toosimpleq_executions", "Executions waiting or running now, by queue and state", labels=["queue", "state"]
        )
        oldest = GaugeMetricFamily(
            "toosimpleq_oldest_waiting_seconds", "Age of the oldest waiting execution (0: none)", labels=["queue"]
        )
        online = GaugeMetricFamily("toosimpleq_workers_online", "Workers online that serve the queue", labels=["queue"])
        for queue in snapshot.queues:
            for state, count in queue.counts.items():
                executions.add_metric([queue.name, state], count)
            age = queue.oldest_waiting_age
            oldest.add_metric([queue.name], age.total_seconds() if age else 0)
            online.add_metric([queue.name], queue.workers_online)
        yield executions
        yield oldest
        yield online
        yield from self.counted_by_workers()

    def counted_by_workers(self):
        runs = CounterMetricFamily(
            "toosimpleq_runs", "Runs ended by a worker, by queue and state (FAILED: failures)",
            labels=["queue", "state", "worker"],
        )
        run_times = HistogramMetricFamily(
            "toosimpleq_run_time_seconds", "Run times of the runs a worker ended", labels=["queue", "worker"]
        )
        abandoned = CounterMetricFamily(
            "toosimpleq_abandoned_threads", "Threads a worker abandoned, stuck past a task's timeout", labels=["worker"]
        )
        since = timezone.now() - WORKER_SERIES_KEPT
        # Through the indexes of the workers not stopped and of the stopped ones, not all the workers ever started.
        recent = WorkerStatus.objects.filter(Q(stopped=None, last_tick__gte=since) | Q(stopped__gte=since))
        rows = recent.values_list("label", "counters", "abandoned_threads")
        for label, counters, abandoned_threads in rows:
            for queue, by_state in counters.get("runs", {}).items():
                for state, count in by_state.items():
                    runs.add_metric([queue, state, label], count)
            for queue, times in counters.get("run_times", {}).items():
                run_times.add_metric([queue, label], _cumulative_buckets(times["buckets"]), times["sum"])
            abandoned.add_metric([label], abandoned_threads)
        yield runs
        yield run_times
        yield abandoned


def _cumulative_buckets(counts):
    """Per-bucket counts as Prometheus takes them: (upper bound, runs up to it), the last one "+Inf"."""
    total, buckets = 0, []
    for bound, count in zip(stats.RUN_TIME_BUCKETS, counts):
        total += count
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return buckets


def metrics_view(request):
    """The queue's metrics in Prometheus' text format: for staff users, or with ``Authorization: Bearer <token>``."""
    user = getattr(request, "user", None)
    if not (_has_token(request) or (user is not None and user.is_authenticated and user.is_staff)):
        return HttpResponse("Forbidden: staff only, or TOOSIMPLEQ_METRICS_TOKEN", status=403, content_type="text/plain")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def _has_token(request):
    token = conf.METRICS_TOKEN
    given = request.headers.get("Authorization", "")
    return bool(token) and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
