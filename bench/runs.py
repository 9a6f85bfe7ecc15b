"""Which tasks ran, and how often: the scale scenario's count of tasks run twice.

Each run of a counted task appends its number to the file named by
BENCH_RUNS, one line, in one write to a file opened for appending: the
workers' processes and threads never interleave their lines.
"""

import collections
import functools
import os

VARIABLE = "BENCH_RUNS"


@functools.cache
def _runs_file():
    return os.open(os.environ[VARIABLE], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def record(number):
    os.write(_runs_file(), b"%d\n" % number)


def read(path):
    """How many times each number was recorded in ``path``."""
    with open(path) as runs:
        return collections.Counter(int(line) for line in runs)
