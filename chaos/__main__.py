"""Run the chaos scenarios at their long size and print what became of the tasks.

    .venv/bin/python -m chaos [--size long|short] [--db sqlite|postgres|all] [ARGS...]

The scenarios are tests/chaos.py, run by tests/test_chaos.py through
tests/run.py (a fresh database each: a throwaway PostgreSQL cluster, a
temporary SQLite file), so the long runs check what the short ones check in
CI. ARGS go to tests/run.py: ``-k kill`` runs the kill -9 scenario only.
Prints a table on stdout; exits non-zero when a check failed.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent

COLUMNS = ("scenario", "database", "tasks", "kills", "in_flight", "lost", "duplicated", "stuck", "problems")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--size", choices=("short", "long"), default="long")
    parser.add_argument("--db", choices=("sqlite", "postgres", "all"), default="all")
    args, run_args = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="toosimpleq-chaos-") as tmp:
        report = Path(tmp) / "outcomes.jsonl"
        report.touch()
        env = {**os.environ, "TOOSIMPLEQ_CHAOS_SIZE": args.size, "TOOSIMPLEQ_CHAOS_REPORT": str(report)}
        command = [sys.executable, "tests/run.py", "--db", args.db, *run_args, "tests.test_chaos"]
        result = subprocess.run(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, text=True, check=False)
        outcomes = [json.loads(line) for line in report.read_text().splitlines()]
    print(table(outcomes))
    print(f"tests: {result.stdout.strip()}")
    return result.returncode


def table(outcomes):
    rows = [[cell(outcome, column) for column in COLUMNS] for outcome in outcomes]
    headers = [column.replace("_", " ") for column in COLUMNS]
    widths = [max(len(text) for text in column) for column in zip(headers, *rows)]
    lines = [headers, ["-" * width for width in widths], *rows]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in lines)


def cell(outcome, column):
    value = outcome[column]
    if column == "problems":
        return str(len(value))
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
