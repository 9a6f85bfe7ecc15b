"""Django settings for the test suite: `manage.py test --settings tests.settings`.

The environment picks the database (tests/run.py sets these variables):

TOOSIMPLEQ_TEST_DB          "sqlite" (default) or "postgres".
TOOSIMPLEQ_TEST_SQLITE_DIR  directory for the SQLite files (default: .tmp/sqlite
                            in the repository).
TOOSIMPLEQ_PG_HOST, TOOSIMPLEQ_PG_PORT, TOOSIMPLEQ_PG_USER
                            the PostgreSQL server (default user: postgres).
TOOSIMPLEQ_TEST_DB_NAME     connect to this database as it is, for both NAME
                            and TEST NAME. Tests set it for the worker
                            subprocesses they spawn, so those use the test
                            database the runner has already created.
TOOSIMPLEQ_TEST_LOG_LEVEL   level of the django_toosimple_q logger (default
                            CRITICAL: quiet, since tests assert on logs with
                            assertLogs, which works at any level).
TOOSIMPLEQ_TEST_SCHEDULE_APP
                            "1" installs tests.scheduleapp, whose schedules
                            the scheduler tests give to the workers they
                            spawn (elsewhere they would fire in every worker).
TOOSIMPLEQ_TEST_BAD_CRON_APP
                            "1" installs tests.badcronapp, a schedule with an
                            invalid cron, for the `manage.py check` test.
TOOSIMPLEQ_TEST_CHAOS_APP   "1" installs tests.chaosapp, the tasks and schedule
                            of the chaos scenarios' worker subprocesses.
TOOSIMPLEQ_TEST_UPSTREAM_APP
                            "1" installs tests.upstreamapp, the tasks of the
                            upstream fixture databases (test_upstream_migration).
TOOSIMPLEQ_TEST_QUEUE_DB_NAME, TOOSIMPLEQ_TEST_PG_QUEUE_DB_NAME
                            the same as TOOSIMPLEQ_TEST_DB_NAME for the
                            second database, "queue" (test_routing), and for
                            "pg_queue", a PostgreSQL database that the SQLite
                            run has when TOOSIMPLEQ_PG_HOST is set.
TOOSIMPLEQ_TEST_ROUTER      a router of tests/routers.py (QueueRouter,
                            PostgresQueueRouter) that sends the queue's tables
                            to their own database, as a site that keeps them
                            off its application database does.
TOOSIMPLEQ_TEST_HEARTBEAT, TOOSIMPLEQ_TEST_WORKER_TIMEOUT
                            TOOSIMPLEQ_HEARTBEAT and TOOSIMPLEQ_WORKER_TIMEOUT,
                            short for the chaos tests' worker subprocesses, so
                            that dead workers are found in seconds.
"""

import os
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent

DB_VENDOR = os.environ.get("TOOSIMPLEQ_TEST_DB", "sqlite")
DB_NAME_OVERRIDE = os.environ.get("TOOSIMPLEQ_TEST_DB_NAME")

POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": os.environ.get("TOOSIMPLEQ_PG_HOST", "127.0.0.1"),
    "PORT": os.environ.get("TOOSIMPLEQ_PG_PORT", "5432"),
    "USER": os.environ.get("TOOSIMPLEQ_PG_USER", "postgres"),
}

if DB_VENDOR == "sqlite":
    SQLITE_DIR = Path(os.environ.get("TOOSIMPLEQ_TEST_SQLITE_DIR", REPO_DIR / ".tmp" / "sqlite"))
    SQLITE_DIR.mkdir(parents=True, exist_ok=True)
    DATABASE = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(SQLITE_DIR / "toosimpleq.sqlite3"),
        # A file, not Django's default in-memory test database, so that
        # worker subprocesses can open the same database.
        "TEST": {"NAME": str(SQLITE_DIR / "test_toosimpleq.sqlite3")},
        "OPTIONS": {
            # WAL lets readers and one writer work at once; IMMEDIATE takes
            # the write lock when a transaction begins, so concurrent writers
            # wait (up to timeout seconds) instead of failing with "database
            # is locked" half-way through a transaction.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }
elif DB_VENDOR == "postgres":
    DATABASE = {**POSTGRES, "NAME": "toosimpleq", "TEST": {}}
else:
    raise ValueError(f"TOOSIMPLEQ_TEST_DB must be 'sqlite' or 'postgres', not {DB_VENDOR!r}")

# A second database of the same kind, for the queue alone (test_routing):
# the runner creates it only for the tests that use it.
QUEUE_DATABASE = {**DATABASE, "TEST": {}}
if DB_VENDOR == "sqlite":
    QUEUE_DATABASE["NAME"] = str(SQLITE_DIR / "toosimpleq_queue.sqlite3")
    QUEUE_DATABASE["TEST"] = {"NAME": str(SQLITE_DIR / "test_toosimpleq_queue.sqlite3")}
else:
    QUEUE_DATABASE["NAME"] = "toosimpleq_queue"

if DB_NAME_OVERRIDE:
    DATABASE["NAME"] = DATABASE["TEST"]["NAME"] = DB_NAME_OVERRIDE
if "TOOSIMPLEQ_TEST_QUEUE_DB_NAME" in os.environ:
    QUEUE_DATABASE["NAME"] = QUEUE_DATABASE["TEST"]["NAME"] = os.environ["TOOSIMPLEQ_TEST_QUEUE_DB_NAME"]

DATABASES = {"default": DATABASE, "queue": QUEUE_DATABASE}
# The SQLite run with a PostgreSQL server beside it (tests/run.py starts one
# when it can): the queue on PostgreSQL, the application on SQLite.
if DB_VENDOR == "sqlite" and "TOOSIMPLEQ_PG_HOST" in os.environ:
    PG_QUEUE_NAME = os.environ.get("TOOSIMPLEQ_TEST_PG_QUEUE_DB_NAME")
    DATABASES["pg_queue"] = {
        **POSTGRES,
        "NAME": PG_QUEUE_NAME or "toosimpleq_queue",
        "TEST": {"NAME": PG_QUEUE_NAME} if PG_QUEUE_NAME else {},
    }
if "TOOSIMPLEQ_TEST_ROUTER" in os.environ:
    DATABASE_ROUTERS = [f"tests.routers.{os.environ['TOOSIMPLEQ_TEST_ROUTER']}"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.admin",
    "django.contrib.sessions",
    "django.contrib.messages",
    # The browser tests' live server serves the admin's CSS and scripts.
    "django.contrib.staticfiles",
    "django_toosimple_q",
    "django_toosimple_q.contrib.mail",
    "tests.testapp",
]
if os.environ.get("TOOSIMPLEQ_TEST_SCHEDULE_APP") == "1":
    INSTALLED_APPS.append("tests.scheduleapp")
if os.environ.get("TOOSIMPLEQ_TEST_BAD_CRON_APP") == "1":
    INSTALLED_APPS.append("tests.badcronapp")
if os.environ.get("TOOSIMPLEQ_TEST_CHAOS_APP") == "1":
    INSTALLED_APPS.append("tests.chaosapp")
if os.environ.get("TOOSIMPLEQ_TEST_UPSTREAM_APP") == "1":
    INSTALLED_APPS.append("tests.upstreamapp")

if "TOOSIMPLEQ_TEST_HEARTBEAT" in os.environ:
    TOOSIMPLEQ_HEARTBEAT = float(os.environ["TOOSIMPLEQ_TEST_HEARTBEAT"])
if "TOOSIMPLEQ_TEST_WORKER_TIMEOUT" in os.environ:
    TOOSIMPLEQ_WORKER_TIMEOUT = float(os.environ["TOOSIMPLEQ_TEST_WORKER_TIMEOUT"])

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
SECRET_KEY = "django-toosimple-q-tests-not-secret"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

TEST_RUNNER = "tests.runner.CountingRunner"

# Worker subprocesses are not under the test runner, which would set these.
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
TOOSIMPLEQ_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"

# Django's task framework (django.tasks, or the django-tasks backport on
# Django 5.2): ours, and Django's immediate backend that test_backend
# compares it with.
try:
    import django.tasks  # noqa: F401

    IMMEDIATE_BACKEND = "django.tasks.backends.immediate.ImmediateBackend"
except ImportError:
    IMMEDIATE_BACKEND = "django_tasks.backends.immediate.ImmediateBackend"
TASKS = {
    "default": {"BACKEND": "django_toosimple_q.backend.TaskBackend", "QUEUES": []},
    "immediate": {"BACKEND": IMMEDIATE_BACKEND, "QUEUES": []},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # The level on each line: tests read workers' logs for errors.
    "formatters": {"levelled": {"format": "%(levelname)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "levelled"}},
    "loggers": {
        "django_toosimple_q": {
            "handlers": ["stderr"],
            "level": os.environ.get("TOOSIMPLEQ_TEST_LOG_LEVEL", "CRITICAL"),
        },
        # The framework logs each failed task: test_backend fails some on purpose.
        "django.tasks": {"level": "CRITICAL"},
        "django_tasks": {"level": "CRITICAL"},
    },
}
