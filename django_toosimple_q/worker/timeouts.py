"""Ending a task at its timeout.

Python cannot kill a thread. At the deadline, TaskTimeout is raised in the
task's thread: that ends a task running Python code, or sleeping in short
steps. A thread stuck in C code (or whose task swallows the exception) is
abandoned: its task's outcome is stored from another thread, and when the
abandoned thread ends at last, it stores nothing.
"""

import ctypes
import math
import threading
import time

from .. import conf
from ..registry import task_of_row

# How long a thread has to end once TaskTimeout was raised in it, before it
# is taken for stuck in C code.
ABANDON_AFTER = 1.0

WAITING, RUNNING, FIRED, ENDED, ABANDONED = "waiting", "running", "fired", "ended", "abandoned"


class TaskTimeout(BaseException):
    """Raised in a task's thread at its timeout.

    A BaseException, as KeyboardInterrupt is: a task's ``except Exception``
    must not swallow it.
    """


def limit_of(claimed):
    """The timeout in seconds of the task of ``claimed``: its own, else TOOSIMPLEQ_TASK_TIMEOUT (None: none)."""
    task = task_of_row(claimed.task_name, claimed.backend)
    if task is not None and task.timeout is not None:
        return task.timeout
    return conf.TASK_TIMEOUT


class Watch:
    """The deadline of one execution, set when it is handed to a thread.

    The task's thread brackets the call with ``with watch:``; the worker's
    loop calls ``check()``. A lock orders the two, so that the exception is
    only ever raised inside the call.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self._state = WAITING
        self._thread_id = None
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            if time.monotonic() >= self.deadline:  # its time went by before a thread took it
                self._state = ENDED
                raise TaskTimeout
            self._thread_id = threading.get_ident()
            self._state = RUNNING
        return self

    def __exit__(self, *exc_info):
        with self._lock:
            if self._state in (FIRED, ABANDONED):
                _raise_in(self._thread_id, None)  # an exception still pending would hit the pool's own code
            if self._state != ABANDONED:
                self._state = ENDED

    @property
    def abandoned(self):
        return self._state == ABANDONED

    def next_check(self):
        """When ``check()`` has something to do next (math.inf: never)."""
        return self.deadline if self._state in (WAITING, RUNNING, FIRED) else math.inf

    def check(self, now):
        """Raise TaskTimeout in the thread at the deadline; True once it is to be abandoned."""
        with self._lock:
            if now < self.deadline:
                return False
            if self._state == WAITING:
                self.deadline = now + ABANDON_AFTER  # __enter__ will see its time is over
            elif self._state == RUNNING:
                _raise_in(self._thread_id, TaskTimeout)
                self._state = FIRED
                self.deadline = now + ABANDON_AFTER
            elif self._state == FIRED:
                self._state = ABANDONED
                return True
            return False


def _raise_in(thread_id, exception):
    """Have ``thread_id`` raise ``exception`` at its next Python instruction (None: no more)."""
    pending = ctypes.py_object(exception) if exception else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), pending)
