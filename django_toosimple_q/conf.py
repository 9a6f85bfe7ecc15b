"""Every TOOSIMPLEQ_* setting with its default, read in this one place.

A value is read from the settings at its first use, then kept: workers read
some of them for every task, and a setting the project left out costs Django
an AttributeError at each read. ``override_settings`` (and anything else
that sends ``setting_changed``) makes the next use read it again.
"""

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS = {
    # Seconds between two heartbeats of a worker's loop thread.
    "TOOSIMPLEQ_HEARTBEAT": 5,
    # Seconds without a heartbeat after which a worker is taken for dead.
    "TOOSIMPLEQ_WORKER_TIMEOUT": 60,
    # Seconds a stopping worker waits for running tasks before interrupting them.
    "TOOSIMPLEQ_GRACE": 30,
    # Seconds a task may run before it is ended and FAILED (None: no limit);
    # register_task(timeout=...) sets a task's own.
    "TOOSIMPLEQ_TASK_TIMEOUT": None,
    # A worker that abandoned more threads stuck past a timeout stops, so
    # that its supervisor starts a fresh process.
    "TOOSIMPLEQ_MAX_ABANDONED_THREADS": 5,
    # Automatic retention: {state: age} of the finished executions to keep
    # (an age: a timedelta, seconds, or "7d"); None: keep everything.
    "TOOSIMPLEQ_RETENTION": None,
    # When the workers apply it (a cron expression).
    "TOOSIMPLEQ_RETENTION_CRON": "17 * * * *",
    # The token that opens metrics_view to a scraper: "Authorization: Bearer <token>".
    # None: staff users only.
    "TOOSIMPLEQ_METRICS_TOKEN": None,
    # The most missed occurrences a catch_up schedule queues at once.
    "TOOSIMPLEQ_CATCH_UP_LIMIT": 1000,
    # How many times a call may be interrupted (its worker died or stopped
    # while it ran) before it ends FAILED instead of being queued again.
    "TOOSIMPLEQ_MAX_INTERRUPTIONS": 3,
    # Seconds: the longest delay between two retries, however many doublings.
    "TOOSIMPLEQ_MAX_RETRY_DELAY": 24 * 3600,
    # Characters of stdout, and of stderr, kept per execution: the head and the tail.
    "TOOSIMPLEQ_MAX_OUTPUT": 1_000_000,
    # Embedded mode: run the worker inside the web server process.
    "TOOSIMPLEQ_EMBEDDED": False,
    "TOOSIMPLEQ_EMBEDDED_THREADS": 2,
    "TOOSIMPLEQ_EMBEDDED_QUEUES": None,
    "TOOSIMPLEQ_EMBEDDED_EXCLUDE_QUEUES": None,
    # queue() runs the task at once in the caller's thread (tests; see django_toosimple_q.testing).
    "TOOSIMPLEQ_IMMEDIATE": False,
    # The most outcomes a worker writes in one transaction, when its threads
    # end tasks close together (1: one transaction per outcome).
    "TOOSIMPLEQ_FINISH_BATCH": 50,
    # PostgreSQL: whether workers prepare their claim and finish statements.
    # None: yes, unless the database has DISABLE_SERVER_SIDE_CURSORS.
    "TOOSIMPLEQ_PREPARED_STATEMENTS": None,
    # contrib.mail: the backend that a worker sends queued email through.
    "TOOSIMPLEQ_EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
}


_values = {}  # setting: the value in use


def __getattr__(name):
    """``conf.HEARTBEAT`` is the value of ``settings.TOOSIMPLEQ_HEARTBEAT``, or its default."""
    key = f"TOOSIMPLEQ_{name}"
    try:
        return _values[key]
    except KeyError:
        pass
    if key not in DEFAULTS:
        raise AttributeError(f"no setting {key}")
    value = _values[key] = getattr(settings, key, DEFAULTS[key])
    return value


def _forget(setting, **kwargs):
    _values.pop(setting, None)


setting_changed.connect(_forget)
