#!/usr/bin/env python3
"""Run upstream django-toosimple-q 1.2.1's own test suite against this package.

    python tests/upstream_suite.py [--db sqlite|postgres|all] [--time-limit SECONDS] [TEST_LABELS...]

Upstream ships its tests inside its package (``django_toosimple_q/tests/``).
Its wheel is downloaded with pip into .tmp/upstream/ (never installed: it has
our import name) and those tests are unpacked as a package of their own,
``upstream_tests``, with only their imports rewritten: imports of upstream's
test modules point into ``upstream_tests``, every other import of
``django_toosimple_q`` stays, and so loads this project. Upstream's
``logging`` module, which its tests import, comes along with them, and its
README.md, whose examples one of them runs.

They run with upstream's own settings (``TOOSIMPLEQ_TEST_DB``,
``POSTGRES_HOST``... as its CI sets them), each test under a time limit, so
that a hang fails one test and not the run. Prints each test's outcome and,
last, ``N passed, N failed`` for all databases together. Exits non-zero when
a test fails that is neither in DIFFERENCES, the failures this project's
README explains ("Coming from 1.x"), nor in NOT_YET, those waiting for work
under way; or when the run itself breaks.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import zipfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
if __name__ == "__main__":
    sys.path.insert(0, str(REPO_DIR))

from tests.pgcluster import PostgresCluster, find_pg_bindir  # noqa: E402

UPSTREAM = "django-toosimple-q==1.2.1"
CACHE_DIR = REPO_DIR / ".tmp" / "upstream"
PACKAGE = "upstream_tests"

# What the wheel holds that becomes PACKAGE: its tests, and the module they log with.
TESTS_PREFIX = "django_toosimple_q/tests/"
TAKEN_MODULES = {"django_toosimple_q/logging.py": "logging.py"}
# Upstream's README.md, whose examples its test_readme runs from the working
# directory, is in the wheel as its metadata's long description.
METADATA = "django_toosimple_q-1.2.1.dist-info/METADATA"
README = "README.md"

# Upstream's tests that fail here by design, with the reason (README, "Coming from 1.x").
DIFFERENCES = {
    "tests_concurrency.ConcurrencyTest.test_task_graceful_stop": "SIGTERM gives running tasks --grace seconds",
    "tests_tasks.TestTasks.test_task_states": "error is '' when there is none, and says why on an INVALID execution",
    "tests_worker.TestWorkerExit.test_terminate": "SIGTERM gives running tasks --grace seconds",
    "tests_worker.TestWorkerExit.test_worker_crash": "SIGUSR1 is not a switch that crashes the worker",
}

# Upstream's tests that fail for want of work under way elsewhere: reported,
# not failing the run; each is to leave this list once it passes (the run
# says so) or to move to DIFFERENCES with its reason.
NOT_YET = {}

DEFAULT_TIME_LIMIT = 60
# Upstream has 38 tests: a run that outlives this many limits is stuck outside any test.
MOST_TESTS = 50

RESULTS_ENV = "TOOSIMPLEQ_UPSTREAM_RESULTS"
TIME_LIMIT_ENV = "TOOSIMPLEQ_UPSTREAM_TIME_LIMIT"


def log(message):
    print(message, file=sys.stderr, flush=True)


def download_wheel():
    """Upstream's wheel, downloaded once into CACHE_DIR."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE_DIR.glob("django_toosimple_q-1.2.1-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--dest", str(CACHE_DIR), UPSTREAM],
            stdout=sys.stderr,
            check=True,
        )
        wheels = sorted(CACHE_DIR.glob("django_toosimple_q-1.2.1-*.whl"))
    return wheels[0]


def unpack_tests(wheel, target):
    """Write PACKAGE into ``target``: upstream's tests, imports rewritten."""
    package_dir = target / PACKAGE
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.startswith(TESTS_PREFIX):
                relative = name[len(TESTS_PREFIX) :]
            elif name in TAKEN_MODULES:
                relative = TAKEN_MODULES[name]
            else:
                continue
            if not relative or name.endswith("/"):
                continue
            text = archive.read(name).decode()
            if name.endswith(".py"):
                text = rewrite_imports(text, upstream_package(name))
            path = package_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        (target / README).write_text(long_description(archive.read(METADATA).decode()))
    return package_dir


def long_description(metadata):
    """The body of a wheel's METADATA: what follows the headers' blank line."""
    return metadata.split("\n\n", 1)[1]


def upstream_package(name):
    """``django_toosimple_q/tests/base.py`` -> ``django_toosimple_q.tests``: where its relative imports start."""
    return name.rsplit("/", 1)[0].replace("/", ".")


def rewrite_imports(text, package):
    """``text`` of a module of upstream's ``package``, its imports absolute and pointing at PACKAGE or at this project."""

    def absolute(match):
        indent, dots, rest = match.groups()
        parts = package.split(".")
        base = parts[: len(parts) - (len(dots) - 1)]
        return f"{indent}from {moved('.'.join(filter(None, [*base, rest])))} import"

    text = re.sub(r"^(\s*)from (\.+)([\w.]*) import", absolute, text, flags=re.MULTILINE)
    # Absolute mentions: `from django_toosimple_q.tests.x import`, and settings
    # naming modules ("django_toosimple_q.tests.settings_bg", INSTALLED_APPS).
    return re.sub(r"\bdjango_toosimple_q(\.[\w.]+)?", lambda match: moved(match.group(0)), text)


def moved(module):
    """Where upstream's ``module`` is found once unpacked: in PACKAGE, or in this project."""
    for prefix, replacement in (("django_toosimple_q.tests", PACKAGE), ("django_toosimple_q.logging", f"{PACKAGE}.logging")):
        if module == prefix or module.startswith(prefix + "."):
            return replacement + module[len(prefix) :]
    return module


MANAGE_PY = """\
import sys

from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""


def run_tests(unpacked, database_env, labels, time_limit):
    """Run PACKAGE on one database; returns {test id: (outcome, reason)}, or None if the run broke."""
    with tempfile.TemporaryDirectory(prefix="toosimpleq-upstream-") as workdir:
        # Upstream's workers are `python manage.py worker` in the working directory.
        Path(workdir, "manage.py").write_text(MANAGE_PY)
        shutil.copy(unpacked / README, workdir)
        results_path = Path(workdir, "results.json")
        env = {
            **os.environ,
            **database_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": os.pathsep.join([str(unpacked), str(REPO_DIR)]),
            "DJANGO_SETTINGS_MODULE": f"{PACKAGE}.settings",
            RESULTS_ENV: str(results_path),
            TIME_LIMIT_ENV: str(time_limit),
        }
        command = [
            sys.executable, "-m", "django", "test", "--noinput", "--verbosity=2",
            "--testrunner=tests.upstream_suite.TimeLimitedRunner",
            *(labels or [PACKAGE]),
        ]
        try:
            subprocess.run(command, cwd=workdir, env=env, stdout=sys.stderr, check=False,
                           timeout=time_limit * MOST_TESTS)
        except subprocess.TimeoutExpired:
            log("the run outlived every per-test limit put together")
            return None
        if not results_path.exists():
            log("the run broke before reporting its results")
            return None
        return {test: tuple(outcome) for test, outcome in json.loads(results_path.read_text()).items()}


def run_on(database, unpacked, labels, time_limit):
    if database == "sqlite":
        return run_tests(unpacked, {"TOOSIMPLEQ_TEST_DB": "sqlite"}, labels, time_limit)
    with PostgresCluster() as cluster:
        env = {
            "TOOSIMPLEQ_TEST_DB": "postgres",
            "POSTGRES_HOST": cluster.host,
            "POSTGRES_PORT": str(cluster.port),
            # Upstream's CI puts a latency proxy there; here the workers connect directly.
            "POSTGRES_HOST_WORKER": cluster.host,
            "POSTGRES_PORT_WORKER": str(cluster.port),
        }
        return run_tests(unpacked, env, labels, time_limit)


# How each outcome counts.
OUTCOMES = {"passed": "passed", "failed": "failed", "error": "failed", "skipped": "skipped"}


def short_id(test_id):
    return test_id.removeprefix(f"{PACKAGE}.")


def main():
    parser = argparse.ArgumentParser(description="Run upstream 1.2.1's test suite against this package.")
    parser.add_argument("--db", choices=("sqlite", "postgres", "all"), default="all")
    parser.add_argument("--time-limit", type=float, default=DEFAULT_TIME_LIMIT, help="seconds per test")
    parser.add_argument("labels", nargs="*", help=f"test labels within {PACKAGE} (default: all)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    databases = ["sqlite", "postgres"] if args.db == "all" else [args.db]
    if "postgres" in databases and not find_pg_bindir():
        log("PostgreSQL is not installed (no initdb found)")
        return 1
    with tempfile.TemporaryDirectory(prefix="toosimpleq-upstream-tests-") as unpacked:
        unpack_tests(download_wheel(), Path(unpacked))
        broken = False
        unexplained, now_passing = [], []
        totals = dict.fromkeys(OUTCOMES.values(), 0)
        for database in databases:
            log(f"=== upstream's suite on {database} ===")
            results = run_on(database, Path(unpacked), args.labels, args.time_limit)
            if results is None:
                broken = True
                continue
            counts = dict.fromkeys(OUTCOMES.values(), 0)
            for test_id, (outcome, reason) in sorted(results.items()):
                test = short_id(test_id)
                counts[OUTCOMES[outcome]] += 1
                known = DIFFERENCES.get(test) or NOT_YET.get(test)
                if OUTCOMES[outcome] == "failed":
                    if not known:
                        unexplained.append(f"{database}: {test}")
                    reason = f"{reason} ({known})" if known else reason
                elif outcome == "passed" and test in NOT_YET:
                    now_passing.append(f"{database}: {test}")
                log(f"{database}: {outcome.upper():8} {test}" + (f": {reason}" if reason else ""))
            log(f"{database}: {counts['passed']} of {len(results)} passed, {counts['failed']} failed, {counts['skipped']} skipped")
            for key in totals:
                totals[key] += counts[key]
    for test in now_passing:
        log(f"passes now, to take out of NOT_YET: {test}")
    for test in unexplained:
        log(f"failed, and neither a documented difference nor in NOT_YET: {test}")
    line = f"{totals['passed']} passed, {totals['failed']} failed"
    if totals["skipped"]:
        line += f", {totals['skipped']} skipped"
    print(line, flush=True)
    return 1 if broken or unexplained else 0


# The runner, in the process that runs upstream's tests.

try:
    from django.test.runner import DiscoverRunner
except ImportError:  # the script itself needs no Django
    DiscoverRunner = object


class TestTimedOut(Exception):
    pass


class TimeLimitedRunner(DiscoverRunner):
    """Fails a test that runs longer than $TOOSIMPLEQ_UPSTREAM_TIME_LIMIT seconds, and writes each test's outcome as JSON."""

    def get_resultclass(self):
        base = super().get_resultclass() or self.test_runner.resultclass
        return type("TimeLimitedResult", (OutcomeRecorder, base), {})

    def suite_result(self, suite, result, **kwargs):
        with open(os.environ[RESULTS_ENV], "w") as file:
            json.dump(result.outcomes, file, indent=1)
        return super().suite_result(suite, result, **kwargs)


class OutcomeRecorder:
    """Mixin for a unittest result: a time limit on each test, and its outcome and reason."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}

    def startTest(self, test):
        signal.signal(signal.SIGALRM, self._time_is_up)
        signal.setitimer(signal.ITIMER_REAL, float(os.environ[TIME_LIMIT_ENV]))
        super().startTest(test)

    def stopTest(self, test):
        signal.setitimer(signal.ITIMER_REAL, 0)
        super().stopTest(test)

    @staticmethod
    def _time_is_up(signum, frame):
        raise TestTimedOut(f"over the time limit of {os.environ[TIME_LIMIT_ENV]}s")

    def addSuccess(self, test):
        super().addSuccess(test)
        self.outcomes.setdefault(test.id(), ("passed", ""))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.outcomes[test.id()] = ("failed", _reason(err))

    def addError(self, test, err):
        super().addError(test, err)
        self.outcomes[test.id()] = ("error", _reason(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.outcomes[test.id()] = ("skipped", reason)


def _reason(err):
    """What went wrong, in one line: the first of the exception's message."""
    return "".join(traceback.format_exception_only(err[0], err[1])).strip().splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
