"""The processes a run starts: Django commands and clients, and the baseline.

Each side runs in a process of its own, so that its peak RSS is its own
(os.wait4 reports it) and the baseline never imports Django.
"""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent


def manage(*args):
    """A manage.py command on the benchmark's settings."""
    return [sys.executable, "manage.py", *args]


def client(*args):
    return [sys.executable, "-m", "bench.client", *args]


def baseline(*args):
    return [sys.executable, "-m", "bench.baseline", *args]


@dataclass(frozen=True)
class Finished:
    pid: int
    stdout: str
    peak_rss_mb: float

    def json(self):
        return json.loads(self.stdout)


def start(command, db):
    """Start ``command`` on ``db``'s database; its stdout is piped, its stderr is ours."""
    env = {**os.environ, **db.env, "DJANGO_SETTINGS_MODULE": "bench.settings"}
    return subprocess.Popen(command, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, text=True)


def run(command, db):
    """Run ``command`` to its end; raises when it fails."""
    return wait(start(command, db))


def stop(process):
    """Ask ``process`` to stop, as Ctrl-C or a service manager would, and wait for it."""
    process.send_signal(signal.SIGTERM)
    return wait(process)


def wait(process):
    with process.stdout:
        stdout = process.stdout.read()
    # wait4 rather than Popen.wait: it also gives the child's resource usage.
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(process.args)} exited with status {process.returncode}")
    return Finished(process.pid, stdout, usage.ru_maxrss / 1024)  # Linux counts ru_maxrss in KiB
