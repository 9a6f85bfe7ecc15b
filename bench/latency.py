"""Pickup latency, measured the same way for the engine and the baseline."""

import time

# How often the enqueuer looks whether its task has run: often enough not to
# slow the run down, seldom enough not to starve the worker of CPU. It does
# not enter the figures, which end at the task body's own timestamp.
POLL_INTERVAL = 0.002


def measure(enqueue, result_of, samples, timeout):
    """Seconds from each enqueue's commit to its task body starting, one task at a time.

    ``enqueue()`` queues a task whose result is time.time() taken as its body
    starts, and returns once the row is committed; ``result_of(task_id)`` is
    that result, or None while the task has not run.
    """
    latencies = []
    for _ in range(samples):
        task_id = enqueue()
        committed = time.time()
        started = wait_until(lambda: result_of(task_id), timeout)
        latencies.append(started - committed)
    return latencies


def wait_until(predicate, timeout, interval=POLL_INTERVAL):
    """Poll ``predicate`` until it returns something; returns that."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing came within {timeout} s")
        time.sleep(interval)
    return value
