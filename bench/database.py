"""The benchmark's throwaway databases, and how each side reaches them.

A database is described by BENCH_* environment variables, so that every
process of a run (the Django worker and client, the baseline, this
orchestrator) reaches the same one: Django through ``django_settings()``,
the others through ``connect()``, a plain DB-API connection.
"""

import contextlib
import datetime
import os
import sqlite3
import tempfile

from tests.pgcluster import PostgresCluster, find_pg_bindir

VENDORS = ("sqlite", "postgres")

# Seconds an SQLite writer waits for the write lock, Django and raw alike.
SQLITE_TIMEOUT = 20


@contextlib.contextmanager
def throwaway(vendor):
    """An empty database of ``vendor``, deleted on exit; yields its Database."""
    if vendor == "sqlite":
        with tempfile.TemporaryDirectory(prefix="toosimpleq-bench-") as directory:
            yield Database({"BENCH_DB": "sqlite", "BENCH_SQLITE_PATH": os.path.join(directory, "bench.sqlite3")})
        return
    with PostgresCluster() as cluster:
        database = Database(
            {
                "BENCH_DB": "postgres",
                "BENCH_PG_HOST": cluster.host,
                "BENCH_PG_PORT": str(cluster.port),
                "BENCH_PG_USER": cluster.user,
                "BENCH_PG_NAME": "postgres",
            }
        )
        with contextlib.closing(database.connect()) as connection:
            connection.execute("CREATE DATABASE bench")
        database.env["BENCH_PG_NAME"] = "bench"
        yield database


def postgres_installed():
    return find_pg_bindir() is not None


class Database:
    """One benchmark database, as described by its BENCH_* variables in ``env``."""

    def __init__(self, env):
        self.env = {key: value for key, value in env.items() if key.startswith("BENCH_")}
        self.vendor = self.env["BENCH_DB"]
        if self.vendor not in VENDORS:
            raise ValueError(f"BENCH_DB must be one of {VENDORS}, not {self.vendor!r}")
        if self.vendor == "postgres":
            # Loaded here, not at module level: SQLite processes, whose RSS is
            # measured, must not carry it. And loaded before connect(): the
            # baseline's clock must not count an import the engine's does not.
            import psycopg

            self.psycopg = psycopg

    def django_databases(self):
        """DATABASES for bench/settings.py: "default", and "queue" when the queue is in a database of its own."""
        queue = self._django_settings(self.env.get("BENCH_PG_NAME"))
        if not self.queue_apart:
            return {"default": queue}
        return {"default": self._django_settings(self.env["BENCH_APP_PG_NAME"]), "queue": queue}

    def _django_settings(self, name):
        if self.vendor == "sqlite":
            return {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": self.env["BENCH_SQLITE_PATH"],
                # What the README advises for SQLite: WAL so readers do not
                # block the writer, IMMEDIATE so writers queue on the lock
                # instead of failing half-way through a transaction.
                "OPTIONS": {
                    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                    "transaction_mode": "IMMEDIATE",
                    "timeout": SQLITE_TIMEOUT,
                },
            }
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": self.env["BENCH_PG_HOST"],
            "PORT": self.env["BENCH_PG_PORT"],
            "USER": self.env["BENCH_PG_USER"],
            "NAME": name,
        }

    def with_env(self, **variables):
        """The same database, for processes that also read these BENCH_* variables (bench/settings.py)."""
        return Database({**self.env, **variables})

    def without_prepared_statements(self):
        """The same database, for an engine told not to prepare its statements, as behind a pooler."""
        return self.with_env(BENCH_UNPREPARED="1")

    def with_quiet_task_log(self):
        """The same database, for an engine whose django.tasks logger takes warnings only (no INFO line per task)."""
        return self.with_env(BENCH_QUIET_TASK_LOG="1")

    def with_finish_batch(self, size):
        """The same database, for an engine that commits at most ``size`` outcomes together (TOOSIMPLEQ_FINISH_BATCH)."""
        return self.with_env(BENCH_FINISH_BATCH=str(size))

    def through_port(self, port):
        """The same PostgreSQL database, reached through another port of 127.0.0.1 (a proxy's)."""
        return self.with_env(BENCH_PG_HOST="127.0.0.1", BENCH_PG_PORT=str(port))

    def with_queue_database(self, name):
        """A new database ``name`` on the same cluster for the queue's tables, routed there; the application's stay here.

        Processes that connect without Django (the baseline, the benchmark's
        own) reach the queue's database.
        """
        with contextlib.closing(self.connect()) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.with_env(BENCH_PG_NAME=name, BENCH_APP_PG_NAME=self.env["BENCH_PG_NAME"])

    @property
    def queue_apart(self):
        """Whether the queue's tables are in a database of their own, Django's alias "queue"."""
        return "BENCH_APP_PG_NAME" in self.env

    def with_signal_sends_off(self):
        """The same database, for an engine whose django_toosimple_q signals are never sent (not even checked for receivers)."""
        return self.with_env(BENCH_SIGNAL_SENDS_OFF="1")

    def connect(self):
        """A new DB-API connection in autocommit mode, set up as Django sets up its own."""
        if self.vendor == "sqlite":
            # isolation_level=None: autocommit, so that BEGIN IMMEDIATE is ours to issue.
            connection = sqlite3.connect(
                self.env["BENCH_SQLITE_PATH"], timeout=SQLITE_TIMEOUT, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection
        return self.psycopg.connect(
            host=self.env["BENCH_PG_HOST"],
            port=self.env["BENCH_PG_PORT"],
            user=self.env["BENCH_PG_USER"],
            dbname=self.env["BENCH_PG_NAME"],
            autocommit=True,
        )

    def execute(self, connection, sql, params=()):
        """Run ``sql`` written with %s placeholders (sqlite3 wants ?); returns the cursor."""
        if self.vendor == "sqlite":
            sql = sql.replace("%s", "?")
        return connection.execute(sql, params)

    def now(self):
        """The current time as a parameter, in the form Django stores it."""
        now = datetime.datetime.now(datetime.timezone.utc)
        if self.vendor == "sqlite":
            return str(now.replace(tzinfo=None))
        return now


def to_epoch(value):
    """Seconds since the epoch of a stored datetime (SQLite keeps UTC text)."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value).replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()
