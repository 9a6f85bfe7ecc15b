"""Smoke test of the benchmark (bench/): it runs, on a few tasks, and prints its table.

Its figures are not checked: timings belong to the benchmark, not to the suite.
"""

import subprocess
import sys
from unittest import skipUnless

from django.db import connection
from django.test import SimpleTestCase

from bench.report import HEADERS
from tests.helpers import REPO_DIR


class BenchSmokeTest(SimpleTestCase):
    def run_bench(self, *args):
        """The table a quick run of the benchmark prints, once it ended well."""
        result = subprocess.run(
            [sys.executable, "-m", "bench", "--quick", "--tasks", "50", *args],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=240,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        header = result.stdout.splitlines()[0].split()
        self.assertEqual(header, list(HEADERS))
        return result.stdout

    def test_quick_run_on_sqlite_prints_the_table(self):
        table = self.run_bench("--db", "sqlite")
        self.assertIn("toosimpleq_claim_idx", table)
        self.assertIn("django.tasks tasks, 8 threads", table)
        self.assertIn("the same, baseline batched", table)
        self.assertNotIn("processes x 8 threads", table)  # PostgreSQL's scenarios

    # The suite's PostgreSQL pass runs the benchmark's PostgreSQL-only scenarios.
    @skipUnless(connection.vendor == "postgresql", "the PostgreSQL pass runs it")
    def test_quick_run_on_postgres_prints_its_own_scenarios(self):
        table = self.run_bench("--db", "postgres", "--scale", "50", "--only", "drain", "scale", "remote", "routed")
        for figure in (
            "the same, baseline batched",
            "drain 50 tasks, 4 processes x 8 threads",
            "tasks run twice, in all the runs above",
            "1 ms round trip, FINISH_BATCH=1",
            "1 ms round trip, group commit",
            "queue in a database of its own",
            "SELECT 1 round trip p50",
        ):
            self.assertIn(figure, table)
