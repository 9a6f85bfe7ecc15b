"""Outcomes of tasks that end close together, written in one transaction.

An executor thread hands its outcome over to the worker's GroupCommit and is
free at once. Who writes it depends on the database (see ``store.ONE_WRITER``):

- Where transactions wait for one writer (SQLite), the worker's loop thread
  writes it: the thread's freeing wakes the loop, which takes what was
  handed over and writes it in the transaction of its next claim, the claim
  that gives the freed threads their next tasks. A task then costs its
  worker a share of one turn of the writer, not a turn of its own.
- Elsewhere (PostgreSQL), a pool thread writes it while the loop claims, on
  another connection, at the same time: the thread that hands an outcome
  over when nobody is writing becomes the writer, and writes what was
  handed over (at most ``most`` at a time) until nothing is left.

Nobody waits for company: a lone outcome is written at once, and a batch is
whatever was handed over while the previous one was being written. Only the
database's time makes batches, never a delay.

A worker killed before an outcome was written leaves its row PROCESSING, run
again as any task of a dead worker; a stopping one writes what was handed
over until its grace period ends (see Worker).
"""

import logging
import threading

logger = logging.getLogger("django_toosimple_q")


class GroupCommit:
    """Items handed over from many threads, taken ``most`` at a time, oldest first.

    ``write(items)``, when given, is called by the thread that hands an item
    over while nobody writes, until nothing is left (on that thread, not on
    those that handed them over); it is to deal with its own errors: one it
    raises is logged, its items left unwritten. Without it, items wait for
    ``take()``.
    """

    def __init__(self, most, write=None):
        self._most = most
        self._write = write
        self._lock = threading.Lock()
        self._waiting = []
        self._writing = False  # whether a thread is the writer

    def hand_over(self, item):
        """Have ``item`` written; returns at once, unless this thread is to write it (and what comes meanwhile)."""
        with self._lock:
            self._waiting.append(item)
            if self._write is None or self._writing:
                return
            self._writing = True
        while batch := self._take_as_writer():
            try:
                self._write(batch)
            except Exception:
                logger.exception("%s outcomes could not be written", len(batch))

    def _take_as_writer(self):
        with self._lock:
            batch = self._take()
            self._writing = bool(batch)
        return batch

    @property
    def writes_itself(self):
        return self._write is not None

    def take(self):
        """The next batch: the oldest items, at most ``most`` (for a GroupCommit that does not write itself)."""
        with self._lock:
            return self._take()

    def _take(self):
        batch = self._waiting[: self._most]
        del self._waiting[: self._most]
        return batch

    def take_all(self):
        with self._lock:
            items, self._waiting = self._waiting, []
        return items

    def put_back(self, batch):
        """Give back a batch taken and not written, to be taken first next time."""
        with self._lock:
            self._waiting[:0] = batch

    def __len__(self):
        return len(self._waiting)
