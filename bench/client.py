"""The engine's side of enqueueing, through Django and queue(); prints JSON.

    python -m bench.client enqueue N    N queue() calls, each its own transaction: {"seconds": S}
    python -m bench.client enqueue-many N    one queue_many() of N calls: {"seconds": S}
    python -m bench.client latency N    pickup latency of N tasks, one at a time: {"latencies": [S, ...]}
    python -m bench.client claim N [--queue Q | --exclude_queue Q]
                                        N claims of one waiting task each: {"latencies": [S, ...]}

A worker must be running for ``latency``, unless --embedded runs one in this
process, as TOOSIMPLEQ_EMBEDDED does in a web server's.
"""

import argparse
import json
import os
import sys
import time

import django


def time_enqueues(count):
    from bench.tasks import noop

    noop.queue()  # connecting is not part of the rate
    started = time.perf_counter()
    for _ in range(count):
        noop.queue()
    return {"seconds": time.perf_counter() - started}


def time_bulk_enqueue(count):
    from bench.tasks import noop

    noop.queue()  # connecting is not part of the rate
    started = time.perf_counter()
    noop.queue_many([()] * count)
    return {"seconds": time.perf_counter() - started}


def time_pickups(samples, timeout, embedded):
    from bench import latency
    from bench.tasks import stamp
    from django_toosimple_q import embedded as embedded_worker
    from django_toosimple_q.models import TaskExec

    def result_of(task_id):
        succeeded = TaskExec.objects.filter(pk=task_id, state=TaskExec.States.SUCCEEDED)
        return succeeded.values_list("result", flat=True).first()

    worker = embedded_worker.start() if embedded else None
    try:
        if worker:
            latency.wait_until(lambda: worker.status is not None, timeout)  # it has registered: it is idle
        return {"latencies": latency.measure(lambda: stamp.queue().pk, result_of, samples, timeout)}
    finally:
        if worker:
            embedded_worker.stop()


def time_claims(count, queues, excluded):
    """The claim statement alone, as a worker with these queue options runs it."""
    from django_toosimple_q import store
    from django_toosimple_q.models import WorkerStatus
    from django_toosimple_q.worker.claiming import QueueFilter

    worker = WorkerStatus.objects.create(label="bench claims", hostname="bench", pid=os.getpid())
    queue_filter = QueueFilter(tuple(queues), tuple(excluded))
    store.claim(worker.pk, 1, queue_filter)  # connecting is not part of it
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        claimed = store.claim(worker.pk, 1, queue_filter)
        latencies.append(time.perf_counter() - started)
        if not claimed:
            raise RuntimeError("nothing left to claim")
    return {"latencies": latencies}


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.client", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("enqueue", "enqueue-many", "latency", "claim"))
    parser.add_argument("count", type=int)
    parser.add_argument("--timeout", type=float, default=30, help="seconds a task may take to run (latency)")
    parser.add_argument("--embedded", action="store_true", help="run an embedded worker in this process (latency)")
    parser.add_argument("--queue", action="append", default=[], help="the queues the claims serve (claim)")
    parser.add_argument("--exclude_queue", action="append", default=[], help="the queues they exclude (claim)")
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    django.setup()
    if args.action == "enqueue":
        outcome = time_enqueues(args.count)
    elif args.action == "enqueue-many":
        outcome = time_bulk_enqueue(args.count)
    elif args.action == "claim":
        outcome = time_claims(args.count, args.queue, args.exclude_queue)
    else:
        outcome = time_pickups(args.count, args.timeout, args.embedded)
    json.dump(outcome, sys.stdout)


if __name__ == "__main__":
    main()
