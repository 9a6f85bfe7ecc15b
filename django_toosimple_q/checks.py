"""System checks: run by ``manage.py check`` and before every worker starts.

An invalid cron needs none: it raises ImproperlyConfigured when its tasks.py
is imported, so no schedule in the registry can hold one.
"""

import math
import re

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.db import connections
from django.db.migrations.recorder import MigrationRecorder

from . import conf
from .registry import LONGEST_RETRY_DELAY, is_int


def check_catch_up_limit(app_configs, **kwargs):
    """TOOSIMPLEQ_CATCH_UP_LIMIT must be a positive integer.

    Any other value would make every worker's scheduler fail at each tick
    once a catch_up schedule has missed an occurrence.
    """
    hint = "It is the most missed occurrences a catch_up schedule queues at once (default 1000)."
    return _positive_integer("CATCH_UP_LIMIT", hint, "toosimpleq.E001")


def check_finish_batch(app_configs, **kwargs):
    """TOOSIMPLEQ_FINISH_BATCH must be a positive integer: any other value would fail every worker's first outcome."""
    hint = "It is the most outcomes a worker stores in one transaction (default 50; 1: one transaction each)."
    return _positive_integer("FINISH_BATCH", hint, "toosimpleq.E008")


def _positive_integer(name, hint, error_id):
    value = getattr(conf, name)
    if is_int(value) and value >= 1:
        return []
    return [checks.Error(f"TOOSIMPLEQ_{name} must be a positive integer, not {value!r}", hint=hint, id=error_id)]


def check_prepared_statements(app_configs, **kwargs):
    """TOOSIMPLEQ_PREPARED_STATEMENTS is None, True or False: a string such as "no" would read as true."""
    value = conf.PREPARED_STATEMENTS
    if value is None or isinstance(value, bool):
        return []
    return [
        checks.Error(
            f"TOOSIMPLEQ_PREPARED_STATEMENTS must be None, True or False, not {value!r}",
            hint="None (the default) prepares the worker's statements unless DISABLE_SERVER_SIDE_CURSORS is set.",
            id="toosimpleq.E003",
        )
    ]


def check_heartbeat_and_timeout(app_configs, **kwargs):
    """TOOSIMPLEQ_WORKER_TIMEOUT must be longer than TOOSIMPLEQ_HEARTBEAT, both finite and positive.

    A worker that beats less often than the others wait for it is taken for
    dead while it runs: its tasks are queued again and run twice.
    """
    heartbeat, timeout = conf.HEARTBEAT, conf.WORKER_TIMEOUT
    if _is_positive_number(heartbeat) and _is_positive_number(timeout) and timeout > heartbeat:
        return []
    return [
        checks.Error(
            f"TOOSIMPLEQ_WORKER_TIMEOUT ({timeout!r}) must be greater than TOOSIMPLEQ_HEARTBEAT ({heartbeat!r}), "
            "both finite numbers of seconds > 0",
            hint="Workers heartbeat every TOOSIMPLEQ_HEARTBEAT seconds (default 5); one silent for "
            "TOOSIMPLEQ_WORKER_TIMEOUT seconds (default 60) is taken for dead and its tasks run again. "
            "Allow a few heartbeats: a timeout of several times the heartbeat.",
            id="toosimpleq.E004",
        )
    ]


def check_poison_limits(app_configs, **kwargs):
    """The limits that keep a poison task from taking the queue down must be usable numbers."""
    rules = [
        (
            "TOOSIMPLEQ_MAX_INTERRUPTIONS",
            conf.MAX_INTERRUPTIONS,
            is_int(conf.MAX_INTERRUPTIONS) and conf.MAX_INTERRUPTIONS >= 1,
            "an integer >= 1",
        ),
        (
            "TOOSIMPLEQ_MAX_RETRY_DELAY",
            conf.MAX_RETRY_DELAY,
            _is_positive_number(conf.MAX_RETRY_DELAY) and conf.MAX_RETRY_DELAY <= LONGEST_RETRY_DELAY,
            f"a number of seconds > 0 and <= {LONGEST_RETRY_DELAY} (a year)",
        ),
        (
            "TOOSIMPLEQ_MAX_OUTPUT",
            conf.MAX_OUTPUT,
            is_int(conf.MAX_OUTPUT) and conf.MAX_OUTPUT >= 0,
            "an integer >= 0",
        ),
    ]
    return [
        checks.Error(f"{name} must be {rule}, not {value!r}", id="toosimpleq.E005")
        for name, value, valid, rule in rules
        if not valid
    ]


def _is_positive_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def check_embedded_queues(app_configs, **kwargs):
    """An embedded worker serves some queues, or all but some: not both."""
    if not (conf.EMBEDDED_QUEUES and conf.EMBEDDED_EXCLUDE_QUEUES):
        return []
    return [
        checks.Error(
            "TOOSIMPLEQ_EMBEDDED_QUEUES and TOOSIMPLEQ_EMBEDDED_EXCLUDE_QUEUES are both set",
            hint="Give the queues the embedded worker serves, or the ones it does not serve, not both.",
            id="toosimpleq.E002",
        )
    ]


def check_embedded_sqlite(app_configs, **kwargs):
    """Embedded mode on SQLite wants WAL, IMMEDIATE transactions and a timeout.

    The embedded threads claim and finish tasks while the server's requests
    write: without them, either side may fail with "database is locked".
    """
    from .models import queue_database  # checks.py is imported before the models are ready

    # The embedded threads write to the queue's database, wherever the routers put it.
    connection = connections[queue_database()]
    if not conf.EMBEDDED or connection.vendor != "sqlite":
        return []
    options = connection.settings_dict.get("OPTIONS", {})
    missing = []
    if not re.search(r"journal_mode\s*=\s*'?wal", options.get("init_command", ""), re.IGNORECASE):
        missing.append('WAL ("PRAGMA journal_mode=WAL" in init_command)')
    if str(options.get("transaction_mode", "")).upper() not in ("IMMEDIATE", "EXCLUSIVE"):
        missing.append('transaction_mode "IMMEDIATE"')
    if "timeout" not in options:
        missing.append("a timeout")
    if not missing:
        return []
    return [
        checks.Warning(
            f"TOOSIMPLEQ_EMBEDDED on SQLite without {', '.join(missing)}: requests and the embedded "
            'worker may fail with "database is locked"',
            hint=f'Set DATABASES["{connection.alias}"]["OPTIONS"] to {{"init_command": "PRAGMA journal_mode=WAL; '
            'PRAGMA synchronous=NORMAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}.',
            id="toosimpleq.W001",
        )
    ]


def check_embedded_debug(app_configs, **kwargs):
    """In production, embedded mode runs as many workers as there are server processes."""
    if not conf.EMBEDDED or settings.DEBUG:
        return []
    return [
        checks.Warning(
            "TOOSIMPLEQ_EMBEDDED runs a worker in each server process: N processes (gunicorn --workers N) "
            "run N workers of TOOSIMPLEQ_EMBEDDED_THREADS threads, each with its own database connections",
            hint="Size the database's connections for them, or run manage.py worker instead; "
            'SILENCED_SYSTEM_CHECKS = ["toosimpleq.W002"] hides this warning.',
            id="toosimpleq.W002",
        )
    ]


MAIL_APP = "django_toosimple_q.contrib.mail"


def check_mail_app(app_configs, **kwargs):
    """Queued email needs its app installed: the workers find its task through it."""
    if settings.EMAIL_BACKEND != f"{MAIL_APP}.backend.QueueBackend" or apps.is_installed(MAIL_APP):
        return []
    return [
        checks.Warning(
            f"EMAIL_BACKEND queues email, but {MAIL_APP} is not in INSTALLED_APPS: "
            "workers will not know its task, and queued email will end INVALID, unsent",
            hint=f'Add "{MAIL_APP}" to INSTALLED_APPS.',
            id="toosimpleq.W003",
        )
    ]


# The migration that stands for upstream's history.
UPSTREAM_BASE = "0016_upstream_1_2_1"


def check_upstream_history(app_configs, databases=None, **kwargs):
    """A database part-way through upstream 1.x's migrations cannot be taken over.

    Migration 0016_upstream_1_2_1 stands for all of upstream 1.2.1's; with
    some of them only, Django would run this project's migrations over a
    schema they do not expect. ``migrate`` runs this check first.
    """
    from .migrations import UPSTREAM_MIGRATIONS

    errors = []
    for alias in databases or ():
        recorder = MigrationRecorder(connections[alias])
        if not recorder.has_table():
            continue
        applied = {name for app, name in recorder.applied_migrations() if app == "toosimpleq"}
        upstream_applied = applied & set(UPSTREAM_MIGRATIONS)
        if upstream_applied and len(upstream_applied) < len(UPSTREAM_MIGRATIONS) and UPSTREAM_BASE not in applied:
            last = max(upstream_applied)
            errors.append(
                checks.Error(
                    f"Database {alias!r} is at upstream django-toosimple-q's migration {last}, "
                    "not at the end of its 1.2.1 history: it cannot be upgraded from there",
                    hint="Install django-toosimple-q==1.2.1, run its `manage.py migrate toosimpleq`, "
                    "then install this version and migrate again.",
                    id="toosimpleq.E006",
                )
            )
    return errors
