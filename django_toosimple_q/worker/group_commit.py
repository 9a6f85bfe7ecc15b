"""Outcomes of tasks that end close together, written in one transaction.

Each executor thread hands its outcome to the worker's GroupCommit and waits
until it is written. A thread that finds nobody writing becomes the writer:
it takes what waits (at most ``most``) and writes it on its own connection,
while the threads whose outcomes come meanwhile wait for it; once it is done,
one of those writes what came meanwhile. Nobody waits for company: a lone
outcome is written at once, and a batch is whatever came while the previous
one was being written. Only the database's time makes batches, never a delay.
"""

import logging
import threading

logger = logging.getLogger("django_toosimple_q")


class _Entry:
    __slots__ = ("item", "done", "result")

    def __init__(self, item):
        self.item = item
        self.done = False
        self.result = None


class GroupCommit:
    """Items written ``most`` at a time by ``write(items)``, which returns a result for each.

    When ``write`` raises, the result of each of its items is None: their
    callers write them one by one, so that one bad item never fails its
    neighbours.
    """

    def __init__(self, write, most):
        self._write = write
        self._most = most
        self._condition = threading.Condition()
        self._waiting = []  # entries not yet taken by a writer, oldest first
        self._writing = False

    def write(self, item):
        """Write ``item`` with those that come at the same time; returns its result (see the class)."""
        entry = _Entry(item)
        with self._condition:
            self._waiting.append(entry)
        while True:
            with self._condition:
                while self._writing and not entry.done:
                    self._condition.wait()
                if entry.done:
                    return entry.result
                self._writing = True
                batch = self._waiting[: self._most]
                del self._waiting[: self._most]
            # Older entries than this thread's may fill a batch: it writes until its own is done.
            self._write_batch(batch)

    def _write_batch(self, batch):
        results = [None] * len(batch)
        try:
            results = self._write([entry.item for entry in batch])
        except Exception as error:
            logger.debug("%s outcomes could not be written together (%s): each is written alone", len(batch), error)
        finally:
            with self._condition:
                for entry, result in zip(batch, results):
                    entry.done, entry.result = True, result
                self._writing = False
                self._condition.notify_all()
