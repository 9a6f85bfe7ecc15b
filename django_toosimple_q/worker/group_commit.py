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
    __slots__ = ("item", "done", "result", "turn")

    def __init__(self, item):
        self.item = item
        self.done = False
        self.result = None
        self.turn = threading.Event()  # set once it is written, or it is its turn to write


class GroupCommit:
    """Items written ``most`` at a time by ``write(items)``, which returns a result for each.

    When ``write`` raises, the result of each of its items is None: their
    callers write them one by one, so that one bad item never fails its
    neighbours.
    """

    def __init__(self, write, most):
        self._write = write
        self._most = most
        self._lock = threading.Lock()
        self._waiting = []  # entries not yet taken by a writer, oldest first
        self._writing = False  # whether a thread writes, or is told it is its turn

    def write(self, item):
        """Write ``item`` with those that come at the same time; returns its result (see the class)."""
        entry = _Entry(item)
        with self._lock:
            self._waiting.append(entry)
            leads, self._writing = not self._writing, True
        if not leads:
            # Each waiting thread has its own event: the writer wakes only
            # those it wrote for, and the next writer.
            entry.turn.wait()
            if entry.done:
                return entry.result
        # Its entry comes first among those waiting: the batch holds it.
        with self._lock:
            batch = self._waiting[: self._most]
            del self._waiting[: self._most]
        results = [None] * len(batch)
        try:
            results = self._write([waiting.item for waiting in batch])
        except Exception as error:
            logger.debug("%s outcomes could not be written together (%s): each is written alone", len(batch), error)
        finally:
            with self._lock:
                for written, result in zip(batch, results):
                    written.done, written.result = True, result
                    written.turn.set()
                if self._waiting:
                    self._waiting[0].turn.set()  # what came meanwhile: its oldest writes it
                else:
                    self._writing = False
        return entry.result
