"""Django settings of the benchmark; the database comes from BENCH_* variables (bench/database.py)."""

import os

from bench.database import Database

DATABASES = Database(os.environ).django_databases()
# Database.with_queue_database(): the queue's tables in a database of their
# own, through the router the README shows.
if "queue" in DATABASES:
    DATABASE_ROUTERS = ["tests.routers.QueueRouter"]
INSTALLED_APPS = ["django_toosimple_q", "bench"]
SECRET_KEY = "django-toosimple-q-bench-not-secret"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
TASKS = {"default": {"BACKEND": "django_toosimple_q.backend.TaskBackend"}}

# Database.without_prepared_statements(): the engine as it runs behind a pooler.
if os.environ.get("BENCH_UNPREPARED"):
    TOOSIMPLEQ_PREPARED_STATEMENTS = False

# Database.with_quiet_task_log(): Django's task framework logs each task's
# start and end at INFO; what that costs is shown apart.
if os.environ.get("BENCH_QUIET_TASK_LOG"):
    LOGGING = {"version": 1, "disable_existing_loggers": False, "loggers": {"django.tasks": {"level": "WARNING"}}}

# Database.with_signal_sends_off(): the engine with django_toosimple_q's
# signal sends made no-ops, to show what sending to no receiver costs.
if os.environ.get("BENCH_SIGNAL_SENDS_OFF"):
    from django_toosimple_q import signals

    signals.send = lambda signal, sender, **kwargs: None

# Database.with_finish_batch(): at most this many outcomes in one commit (1: no group commit).
if os.environ.get("BENCH_FINISH_BATCH"):
    TOOSIMPLEQ_FINISH_BATCH = int(os.environ["BENCH_FINISH_BATCH"])
