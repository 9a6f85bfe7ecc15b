"""Smoke test of the benchmark (bench/): it runs, on a few tasks, and prints its table.

Its figures are not checked: timings belong to the benchmark, not to the suite.
"""

import subprocess
import sys

from django.test import SimpleTestCase

from bench.report import HEADERS
from tests.helpers import REPO_DIR


class BenchSmokeTest(SimpleTestCase):
    def test_quick_run_on_sqlite_prints_the_table(self):
        result = subprocess.run(
            [sys.executable, "-m", "bench", "--db", "sqlite", "--quick", "--tasks", "50"],
            cwd=REPO_DIR,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        header = result.stdout.splitlines()[0].split()
        self.assertEqual(header, list(HEADERS))
        self.assertIn("toosimpleq_claim_idx", result.stdout)
        self.assertIn("django.tasks tasks, 8 threads", result.stdout)
