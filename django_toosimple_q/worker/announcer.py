"""What follows the outcomes a worker's loop stored, sent from a thread of its own.

On SQLite the loop stores the outcomes its threads hand over, with its next
claim (see group_commit.py). What follows each one (task_finished, a
django.tasks result's bookkeeping and Django's signal, the run counters)
calls the project's receivers, which may take their time: on the loop, they
would hold up its next claim. The announcer's thread runs them instead, in
the order the outcomes were stored.
"""

import logging
import queue
import threading

from django.db import connections

from .executor import recycle_connections

logger = logging.getLogger("django_toosimple_q")


class Announcer(threading.Thread):
    """Runs each ``say()`` handed to ``announce``, in order, until ``stop()``."""

    def __init__(self, name):
        super().__init__(name=name, daemon=True)
        self._waiting = queue.SimpleQueue()  # the say() to run; None: stop

    def announce(self, say):
        self._waiting.put(say)

    def stop(self, timeout=None):
        """Run what was announced, then end the thread; whether it ended within ``timeout`` seconds."""
        self._waiting.put(None)
        self.join(timeout)
        return not self.is_alive()

    def run(self):
        try:
            while (say := self._waiting.get()) is not None:
                try:
                    say()
                except Exception:  # say() logs what it can foresee: this is a bug, not a reason to stop
                    logger.exception("could not send what follows stored outcomes")
                # As a pool thread after each task: receivers are the project's code.
                recycle_connections()
        finally:
            connections.close_all()
