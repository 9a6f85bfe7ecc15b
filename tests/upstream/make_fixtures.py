#!/usr/bin/env python3
"""Make the upstream 1.2.1 databases that test_upstream_migration migrates.

    python tests/upstream/make_fixtures.py

Run by hand, once (not by CI): it installs django-toosimple-q 1.2.1 from PyPI
into a throwaway virtualenv, writes a small project whose tasks use upstream's
decorators (upstreamapp, below), and lets upstream's own code and worker fill
a SQLite database and a PostgreSQL one (a throwaway cluster, as the tests
make). The results are data: upstream-1.2.1.sqlite and
upstream-1.2.1.postgres.sql (a plain pg_dump), beside this script. Our side
of the same task names is tests/upstreamapp.
"""

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tests.pgcluster import PostgresCluster  # noqa: E402

REQUIREMENTS = ["django-toosimple-q==1.2.1", "Django>=4.2,<5", "psycopg[binary]>=3.1"]

SETTINGS = """
import os

SECRET_KEY = "fixtures"
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django_toosimple_q", "upstreamapp"]
EMAIL_BACKEND = "django_toosimple_q.contrib.mail.backend.QueueBackend"
TOOSIMPLEQ_EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
if os.environ["FIXTURE_DB"] == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["FIXTURE_NAME"]}}
else:
    DATABASES = {"default": {
        "ENGINE": "django.db.backends.postgresql", "NAME": os.environ["FIXTURE_NAME"],
        "HOST": "127.0.0.1", "PORT": os.environ["FIXTURE_PORT"], "USER": "postgres",
    }}
"""

TASKS = '''
import datetime
import decimal

from django_toosimple_q.decorators import register_task, schedule_task


class Thing:
    """Only upstream's side has it: a pickled Thing cannot be loaded by ours."""


@register_task(name="upstream.add")
def add(a, b=0):
    return a + b


@register_task(name="upstream.echo")
def echo(value):
    return value


@register_task(name="upstream.pair", queue="reports", priority=3)
def pair(a, b):
    return (a, b)


@register_task(name="upstream.when")
def when():
    return datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)


@register_task(name="upstream.money")
def money():
    return decimal.Decimal("12.50")


@register_task(name="upstream.as_set")
def as_set():
    return {1, 2, 3}


@register_task(name="upstream.failing", retries=1)
def failing():
    raise ValueError("always")


@register_task(name="upstream.refresh", unique=True)
def refresh(key):
    return key


@schedule_task(cron="0 8 * * *", run_on_creation=True)
@register_task(name="upstream.daily")
def daily():
    return "daily"


@schedule_task(cron="0 * * * *", catch_up=True, run_on_creation=True, datetime_kwarg="hour")
@register_task(name="upstream.hourly")
def hourly(hour=None):
    return str(hour)


@schedule_task(cron="manual")
@register_task(name="upstream.by_hand")
def by_hand():
    return "by hand"
'''

# Run in upstream's virtualenv: rows made by upstream's own code and worker.
POPULATE = '''
import datetime

import django

django.setup()

from django.core.mail import EmailMultiAlternatives
from django.core.management import call_command

from upstreamapp import tasks

worker = ["worker", "--until_done", "--tick", "0.1", "--label", "fixture-{pid}"]

# Finished rows, and the schedules' rows (run on creation).
tasks.add.queue(1, b=2)
tasks.echo.queue("text")
tasks.pair.queue(1, "b")
tasks.echo.queue({"key": [1, 2]})
tasks.when.queue()
tasks.money.queue()
tasks.as_set.queue()
tasks.failing.queue()
call_command(*worker)
call_command(*worker, "--no_schedules")  # the retry of upstream.failing

# Waiting rows, left for our worker.
tasks.add.queue(2, b=3)
tasks.pair.queue((1, 2), datetime.datetime(2026, 5, 6, 7, 8, tzinfo=datetime.timezone.utc))
tasks.refresh.queue("key")
tasks.echo.queue("much later", due=datetime.datetime(2099, 1, 1, tzinfo=datetime.timezone.utc))
tasks.echo.queue(tasks.Thing())
message = EmailMultiAlternatives(
    "Subject", "Body", "from@example.com", ["to@example.com"], cc=["cc@example.com"], headers={"X-Fixture": "1"}
)
message.attach_alternative("<p>Body</p>", "text/html")
message.attach("notes.txt", "some notes", "text/plain")
message.send()
'''


def main():
    with tempfile.TemporaryDirectory(prefix="toosimpleq-fixtures-") as tmp:
        tmp = Path(tmp)
        python = make_virtualenv(tmp / "venv")
        write_project(tmp / "project")
        sqlite = tmp / "upstream.sqlite"
        populate(python, tmp / "project", {"FIXTURE_DB": "sqlite", "FIXTURE_NAME": str(sqlite)})
        with sqlite3.connect(sqlite) as database:
            database.execute("VACUUM")  # kilobytes, not the pages Django's migrations freed
        shutil.copy(sqlite, HERE / "upstream-1.2.1.sqlite")
        with PostgresCluster() as cluster:
            createdb = os.path.join(cluster.bindir, "createdb")
            pg_dump = os.path.join(cluster.bindir, "pg_dump")
            connection = ["-h", cluster.host, "-p", str(cluster.port), "-U", cluster.user]
            subprocess.run([createdb, *connection, "upstream"], check=True)
            env = {"FIXTURE_DB": "postgres", "FIXTURE_NAME": "upstream", "FIXTURE_PORT": str(cluster.port)}
            populate(python, tmp / "project", env)
            dump = subprocess.run(
                [pg_dump, *connection, "--no-owner", "--no-privileges", "upstream"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        (HERE / "upstream-1.2.1.postgres.sql").write_text(dump)
    print(f"written: {HERE / 'upstream-1.2.1.sqlite'}, {HERE / 'upstream-1.2.1.postgres.sql'}")


def make_virtualenv(path):
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    return python


def write_project(path):
    (path / "upstreamapp").mkdir(parents=True)
    (path / "settings.py").write_text(SETTINGS)
    (path / "upstreamapp" / "__init__.py").write_text("")
    (path / "upstreamapp" / "tasks.py").write_text(textwrap.dedent(TASKS))
    (path / "populate.py").write_text(POPULATE)


def populate(python, project, env):
    env = {**os.environ, **env, "DJANGO_SETTINGS_MODULE": "settings", "PYTHONPATH": str(project)}
    django_admin = [python, "-m", "django"]
    subprocess.run([*django_admin, "migrate", "--verbosity", "0"], cwd=project, env=env, check=True)
    subprocess.run([python, "populate.py"], cwd=project, env=env, check=True)


if __name__ == "__main__":
    main()
