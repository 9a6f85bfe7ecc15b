#!/usr/bin/env python3
"""Run the test suite against every supported database and add up the counts.

    python tests/run.py [--db sqlite|postgres|all] [--counts-file PATH] [ARGS...]

ARGS go to `manage.py test` as they are: test labels, -k PATTERN, --failfast...
Each database gets a fresh one: a temporary directory for SQLite, a throwaway
cluster (tests/pgcluster.py) for PostgreSQL. The SQLite run has a cluster of
its own too, when PostgreSQL is installed: for the tests of an application on
SQLite whose queue is on PostgreSQL. When PostgreSQL is not installed
it is skipped with a message, except in CI (CI=true), where it is installed.

Everything goes to stderr except the last line, on stdout:
`N passed, N failed` (`, N skipped` when any were), failed being failures,
errors and unexpected successes. The exit status is non-zero on any failure, on
a run that crashed before reporting its counts, and when no test ran at all.
"""

import argparse
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))

from tests.pgcluster import PostgresCluster, find_pg_bindir  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

COUNT_KEYS = (
    "run",
    "passed",
    "failures",
    "errors",
    "skipped",
    "expected_failures",
    "unexpected_successes",
)


def log(message):
    print(message, file=sys.stderr, flush=True)


def failed(counts):
    return counts["failures"] + counts["errors"] + counts["unexpected_successes"]


def summary(counts):
    line = f"{counts['passed']} passed, {failed(counts)} failed"
    if counts["skipped"]:
        line += f", {counts['skipped']} skipped"
    return line


def run_suite(test_args, env):
    """Run `manage.py test` once with env added; return its counts, or None
    if it crashed before writing them."""
    with tempfile.TemporaryDirectory(prefix="toosimpleq-counts-") as tmp:
        counts_path = os.path.join(tmp, "counts.json")
        command = [
            sys.executable,
            "manage.py",
            "test",
            "--settings=tests.settings",
            "--noinput",
            # One line per test: a CI log then says which test hung or failed.
            "--verbosity=2",
            *test_args,
        ]
        result = subprocess.run(
            command,
            cwd=REPO_DIR,
            env={**os.environ, **env, "TOOSIMPLEQ_TEST_COUNTS": counts_path},
            # Django prints progress on stdout; ours is kept for the summary.
            stdout=sys.stderr,
            check=False,
        )
        try:
            with open(counts_path) as file:
                counts = json.load(file)
        except FileNotFoundError:
            log(f"the test run crashed (status {result.returncode}) before reporting its counts")
            return None
    if result.returncode != 0 and not failed(counts):
        # Counts say all passed but the process failed: trust the failure.
        log(f"the test run exited with status {result.returncode}")
        return None
    return counts


def run_sqlite(test_args, with_postgres):
    """The SQLite run; ``with_postgres``: a cluster beside it, for the tests of a queue on PostgreSQL."""
    sqlite_dir = tempfile.mkdtemp(prefix="toosimpleq-sqlite-")
    env = {"TOOSIMPLEQ_TEST_DB": "sqlite", "TOOSIMPLEQ_TEST_SQLITE_DIR": sqlite_dir}
    try:
        if not with_postgres:
            return run_suite(test_args, env)
        with PostgresCluster() as cluster:
            return run_suite(test_args, {**env, **cluster_env(cluster)})
    finally:
        shutil.rmtree(sqlite_dir, ignore_errors=True)


def run_postgres(test_args):
    with PostgresCluster() as cluster:
        return run_suite(test_args, {"TOOSIMPLEQ_TEST_DB": "postgres", **cluster_env(cluster)})


def cluster_env(cluster):
    return {
        "TOOSIMPLEQ_PG_HOST": cluster.host,
        "TOOSIMPLEQ_PG_PORT": str(cluster.port),
        "TOOSIMPLEQ_PG_USER": cluster.user,
        # For the chaos tests, which restart the server (PostgresCluster.attach).
        "TOOSIMPLEQ_PG_DATADIR": cluster.datadir,
        "TOOSIMPLEQ_PG_BINDIR": cluster.bindir,
    }


def postgres_available():
    """Whether PostgreSQL is installed, installing it first in CI."""
    if find_pg_bindir():
        return True
    if not IN_CI:
        log(
            "PostgreSQL is not installed (no initdb found): "
            "install it (Debian: apt-get install postgresql) to test on it"
        )
        return False
    log("PostgreSQL is not installed: installing it (CI)")
    # Not root (a hosted CI runner, say): apt needs sudo.
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt_commands = (["update"], ["install", "-y", "--no-install-recommends", "postgresql"])
    try:
        for apt_command in apt_commands:
            subprocess.run(
                [*sudo, "apt-get", *apt_command], env=apt_env, stdout=sys.stderr, check=True
            )
    except (OSError, subprocess.CalledProcessError) as error:
        log(f"could not install PostgreSQL: {error}")
        return False
    return find_pg_bindir() is not None


def raise_system_exit(signum, frame):
    # SIGTERM (a CI timeout, say) would end us without running the finally
    # blocks and context managers that stop PostgreSQL: turn it into an exit.
    sys.exit(128 + signum)


def main():
    parser = argparse.ArgumentParser(
        description="Run the test suite on SQLite and PostgreSQL.",
        epilog="Other arguments are passed to `manage.py test`.",
        allow_abbrev=False,
    )
    parser.add_argument("--db", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--counts-file", help="also write the total counts as JSON to this file")
    args, test_args = parser.parse_known_args()
    signal.signal(signal.SIGTERM, raise_system_exit)

    databases = ["sqlite", "postgres"] if args.db == "all" else [args.db]
    crashed = False
    with_postgres = postgres_available()
    runs = {"sqlite": functools.partial(run_sqlite, with_postgres=with_postgres), "postgres": run_postgres}
    if "postgres" in databases and not with_postgres:
        databases.remove("postgres")
        # Skipping is fine on a developer's machine, not when PostgreSQL was
        # asked for by name, nor in CI, which must test both.
        if args.db == "postgres" or IN_CI:
            crashed = True
        else:
            log("skipping the PostgreSQL run")

    totals = Counter(dict.fromkeys(COUNT_KEYS, 0))
    for database in databases:
        log(f"=== {database} ===")
        try:
            counts = runs[database](test_args)
        except Exception as error:
            # Report it and go on: one broken database must not hide the
            # other's results, and the summary line must still be printed.
            log(f"{database}: {type(error).__name__}: {error}")
            counts = None
        if counts is None:
            crashed = True
            continue
        log(f"{database}: {summary(counts)}")
        totals.update({key: counts[key] for key in COUNT_KEYS})

    if args.counts_file:
        with open(args.counts_file, "w") as file:
            json.dump({**totals, "crashed": crashed}, file)
    if totals["run"] == 0:
        log("no test ran")
    print(summary(totals), flush=True)
    return 1 if crashed or failed(totals) or totals["run"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
