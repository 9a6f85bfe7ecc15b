"""Outcomes of tasks that end close together, written in one transaction.

An executor thread hands its outcome over to the worker's GroupCommit and is
free at once for its next task, unless nobody is writing: then it becomes
the writer, and writes what was handed over (at most ``most`` at a time, on
its own connection) until nothing is left. Nobody waits for company: a lone
outcome is written at once, and a batch is whatever was handed over while
the previous one was being written. Only the database's time makes batches,
never a delay.

An outcome handed over always belongs to a thread still busy in the pool:
the writer takes, under the lock, what it finds; what comes after it looked
makes its bearer the next writer. So a worker whose pool is idle has nothing
left to write, and one that dies before writing leaves the rows PROCESSING,
run again as any task of a dead worker.
"""

import logging
import threading

logger = logging.getLogger("django_toosimple_q")


class GroupCommit:
    """Items handed over from many threads, written ``most`` at a time by ``write(items)``.

    ``write`` does whatever follows the writing of its items (it is called
    on the writer's thread, not on those that handed them over); it is to
    deal with its own errors: one it raises is logged, its items left
    unwritten.
    """

    def __init__(self, write, most):
        self._write = write
        self._most = most
        self._lock = threading.Lock()
        self._waiting = []  # items handed over and not yet taken by the writer, oldest first
        self._writing = False  # whether a thread is the writer

    def hand_over(self, item):
        """Have ``item`` written; returns at once, unless this thread is to write it (and what comes meanwhile)."""
        with self._lock:
            self._waiting.append(item)
            if self._writing:
                return
            self._writing = True
        while True:
            with self._lock:
                batch = self._waiting[: self._most]
                del self._waiting[: self._most]
                if not batch:
                    self._writing = False
                    return
            try:
                self._write(batch)
            except Exception:
                logger.exception("%s outcomes could not be written", len(batch))
