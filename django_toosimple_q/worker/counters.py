"""What a worker ran, counted as it goes: counters that only grow.

Metrics read them from the WorkerStatus rows, where each worker writes its
own at every heartbeat: pruning executions never makes them go back.
"""

import bisect
import threading

from ..stats import RUN_TIME_BUCKETS


class RunCounters:
    """The runs a worker ended, by queue and state, and their run times by queue (in RUN_TIME_BUCKETS)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = {}  # queue -> {state: count}
        self._run_times = {}  # queue -> {"buckets": [count per bucket], "sum": seconds}

    def record(self, queue, state, seconds):
        with self._lock:
            by_state = self._runs.setdefault(queue, {})
            by_state[state] = by_state.get(state, 0) + 1
            run_times = self._run_times.setdefault(queue, {"buckets": [0] * len(RUN_TIME_BUCKETS), "sum": 0.0})
            run_times["buckets"][bisect.bisect_left(RUN_TIME_BUCKETS, seconds)] += 1
            run_times["sum"] += seconds

    def snapshot(self):
        """The counts so far, as WorkerStatus.counters stores them."""
        with self._lock:
            return {
                "runs": {queue: dict(by_state) for queue, by_state in self._runs.items()},
                "run_times": {
                    queue: {"buckets": list(times["buckets"]), "sum": times["sum"]}
                    for queue, times in self._run_times.items()
                },
            }
