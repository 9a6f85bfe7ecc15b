"""The chaos scenarios: real worker processes killed, stopped, and cut off from
their database, then a count of what became of every task.

One implementation, two sizes: tests/test_chaos.py runs them SHORT in the
suite, LONG when TOOSIMPLEQ_CHAOS_SIZE=long (``python -m chaos`` does so and
prints the table of their outcomes). Each scenario is a function of its
sizes that returns an Outcome; the test asserts on it.

The workers run tests/chaosapp's tasks, on the test database, with a fast
heartbeat. Each run of a keyed task leaves an Execution row "KEY run UUID":
runs are counted per key, whatever process ran them.
"""

import datetime
import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from django.db import connection
from django.utils import timezone

from django_toosimple_q.models import ScheduleExec, TaskExec, WorkerStatus

from .helpers import REPO_DIR, start_worker, wait_for, worker_env
from .pgcluster import PostgresCluster
from .testapp.models import Execution

States = TaskExec.States
UNFINISHED = (States.SLEEPING, States.QUEUED, States.PROCESSING)

SIZES = {
    "short": {
        "kill -9": {"workers": 3, "threads": 4, "tasks": 300, "kills": 4, "interval": 0.5},
        "kill -9 batches": {"workers": 2, "threads": 8, "tasks": 3000, "kills": 6, "interval": 0.3, "longest": 0.002},
        "late outcomes": {"threads": 8, "timeout": 3},
        "postgres restart": {"workers": 3, "threads": 4, "tasks": 300, "restarts": 1},
        "long outage": {"workers": 3, "threads": 4, "tasks": 6, "timeout": 10, "outage": 15},
        "sqlite writers": {"workers": 3, "threads": 4, "tasks": 300},
        "sigterm": {"within": 3, "beyond": 2, "grace": 8},
        "schedules": {"workers": 4, "seconds": 10, "interval": 2},
        "poison": {"workers": 3, "threads": 4, "tasks": 500},
    },
    "long": {
        "kill -9": {"workers": 4, "threads": 4, "tasks": 2000, "kills": 20, "interval": 1},
        "kill -9 batches": {"workers": 3, "threads": 8, "tasks": 30000, "kills": 30, "interval": 0.5, "longest": 0.002},
        "late outcomes": {"threads": 8, "timeout": 3},
        "postgres restart": {"workers": 4, "threads": 4, "tasks": 2000, "restarts": 3},
        "long outage": {"workers": 4, "threads": 4, "tasks": 12, "timeout": 10, "outage": 60},
        "sqlite writers": {"workers": 3, "threads": 4, "tasks": 1000},
        "sigterm": {"within": 8, "beyond": 8, "grace": 30},
        "schedules": {"workers": 4, "seconds": 30, "interval": 3},
        "poison": {"workers": 4, "threads": 4, "tasks": 3000},
    },
}


def sizes(scenario):
    return SIZES[os.environ.get("TOOSIMPLEQ_CHAOS_SIZE", "short")][scenario]


@dataclass
class Outcome:
    """What became of a scenario's tasks: a row of the table."""

    scenario: str
    tasks: int
    kills: int = 0
    lost: int = 0  # tasks with no SUCCEEDED execution (schedules: due times never queued)
    duplicated: int = 0  # runs beyond the first (schedules: due times queued again)
    stuck: int = 0  # executions left waiting or PROCESSING at the end
    in_flight: int = 0  # tasks running in the workers killed, when they were
    double_successes: int = 0  # tasks with more than one SUCCEEDED execution
    problems: list = field(default_factory=list)  # what went wrong in the workers
    facts: dict = field(default_factory=dict)  # what the scenario checks besides

    def report(self):
        """Add this outcome to the file named by TOOSIMPLEQ_CHAOS_REPORT, if any."""
        path = os.environ.get("TOOSIMPLEQ_CHAOS_REPORT")
        if path:
            with open(path, "a") as file:
                file.write(json.dumps({**asdict(self), "database": connection.vendor}, default=str) + "\n")


class Workers:
    """Worker subprocesses, each with its log in a file, that can be killed and replaced."""

    def __init__(self, name, log_dir, *args, worker_timeout=60):
        self.name = name
        self.log_dir = Path(log_dir)
        self.args = args
        self.env = {
            "TOOSIMPLEQ_TEST_CHAOS_APP": "1",
            "TOOSIMPLEQ_TEST_HEARTBEAT": "0.2",
            "TOOSIMPLEQ_TEST_WORKER_TIMEOUT": str(worker_timeout),
            "TOOSIMPLEQ_TEST_LOG_LEVEL": "INFO",
        }
        self.processes = {}  # label -> Popen

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        # Whatever happened, no worker outlives its scenario.
        for label in self.alive():
            self.processes[label].kill()
            self.processes[label].wait()

    def start(self, *extra_args):
        label = f"{self.name}-{len(self.processes)}"
        with open(self.log_dir / f"{label}.log", "w") as log:
            self.processes[label] = start_worker(
                *self.args, *extra_args, "--label", label, env=self.env, stdout=subprocess.DEVNULL, stderr=log
            )
        return label

    def alive(self):
        return [label for label, process in self.processes.items() if process.poll() is None]

    def wait_registered(self, labels=None):
        labels = labels or self.alive()
        wait_for(
            lambda: WorkerStatus.objects.filter(label__in=labels).count() == len(labels),
            timeout=120,
            message="the workers to start",
        )

    def kill(self, label):
        """SIGKILL the worker ``label``; returns how many tasks it was running."""
        process = self.processes[label]
        process.send_signal(signal.SIGKILL)
        process.wait()
        # Nothing moves its rows until the others find it dead.
        return TaskExec.objects.filter(worker__label=label, state=States.PROCESSING).count()

    def stop(self, timeout=120):
        """SIGTERM the live workers and wait for them; returns their exit codes by label."""
        # A worker still starting has no signal handler yet: SIGTERM would kill it.
        self.wait_registered()
        alive = self.alive()
        for label in alive:
            self.processes[label].send_signal(signal.SIGTERM)
        return {label: self.processes[label].wait(timeout=timeout) for label in alive}

    def log(self, label):
        return (self.log_dir / f"{label}.log").read_text(errors="replace")

    def problems(self, exit_codes):
        """Exit codes other than 0, and the errors in the workers' logs."""
        found = [f"{label} exited {code}" for label, code in exit_codes.items() if code != 0]
        for label in self.processes:
            for line in self.log(label).splitlines():
                if line.startswith(("ERROR", "CRITICAL", "Traceback", "Exception in thread")):
                    found.append(f"{label}: {line}")
        return found


def queue_keyed(task_name, calls, retries=0):
    """Store one execution per ``(key, *args)`` call, in bulk; returns the keys."""
    TaskExec.objects.bulk_create(
        TaskExec(task_name=task_name, args=list(call), queue="chaos", retries=retries) for call in calls
    )
    return [call[0] for call in calls]


def short_tasks(count, prefix, longest=0.1):
    """``count`` calls of chaos.work, sleeping up to ``longest`` seconds each (from a tenth of it)."""
    calls = [(f"{prefix}-{number}", random.uniform(longest / 10, longest)) for number in range(count)]
    return queue_keyed("chaos.work", calls, retries=5)


def unfinished_count(task_name):
    return TaskExec.objects.filter(task_name=task_name, state__in=UNFINISHED).count()


def settle(task_name, timeout):
    """Wait until every execution of ``task_name`` ended, or ``timeout`` seconds."""
    try:
        wait_for(lambda: not unfinished_count(task_name), timeout=timeout, interval=0.2, message="the tasks to end")
    except AssertionError:
        pass  # counted as stuck


def count_keyed(outcome, task_name, keys):
    """Fill ``outcome`` with what became of the executions of ``keys``."""
    successes = Counter()
    for args, state in TaskExec.objects.filter(task_name=task_name).values_list("args", "state"):
        if state == States.SUCCEEDED:
            successes[args[0]] += 1
    runs = Counter(key.split(" run ")[0] for key in Execution.objects.values_list("key", flat=True))
    outcome.lost = sum(1 for key in keys if not successes[key])
    outcome.double_successes = sum(1 for key in keys if successes[key] > 1)
    outcome.duplicated = sum(runs[key] - 1 for key in keys if runs[key] > 1)
    outcome.stuck = unfinished_count(task_name)
    outcome.facts["interrupted"] = TaskExec.objects.filter(task_name=task_name, state=States.INTERRUPTED).count()
    outcome.facts["failed"] = TaskExec.objects.filter(task_name=task_name, state=States.FAILED).count()
    return outcome


def kill_workers(log_dir, *, workers, threads, tasks, kills, interval, longest=0.1, scenario="kill -9"):
    """SIGKILL a random worker every ``interval`` seconds, ``kills`` times, and start another.

    A busy one is chosen when there is one: an idle one has nothing to lose.
    Tasks of a few milliseconds (``longest``) on 8 threads end close
    together: the kills come while their outcomes wait for, or are in, a
    batch being written (group commit).
    """
    keys = short_tasks(tasks, "kill", longest)
    outcome = Outcome(scenario, tasks)
    busy = TaskExec.objects.filter(state=States.PROCESSING, worker__stopped__isnull=True)
    args = ("--queue", "chaos", "--threads", str(threads), "--tick", "0.1")
    # Long enough that no busy, living worker is taken for dead on a loaded
    # machine: only the tasks of the killed ones may run twice.
    with Workers("killed", log_dir, *args, worker_timeout=10) as pool:
        for _ in range(workers):
            pool.start()
        pool.wait_registered()
        for _ in range(kills):
            time.sleep(interval)
            running = set(busy.values_list("worker__label", flat=True)) & set(pool.alive())
            outcome.in_flight += pool.kill(random.choice(sorted(running) or pool.alive()))
            outcome.kills += 1
            pool.start()
        settle("chaos.work", timeout=60 + tasks / 10)
        outcome.problems = pool.problems(pool.stop())
    return count_keyed(outcome, "chaos.work", keys)


def refuse_late_outcomes(log_dir, *, threads, timeout):
    """A worker frozen (SIGSTOP) while its tasks run is taken for dead; thawed, its outcomes are refused.

    Another worker interrupts the frozen one's tasks and runs their
    replacements. Then the tasks' gate opens and the frozen worker thaws:
    its ``threads`` tasks end together, and their batch must store nothing.
    """
    gate = str(Path(log_dir) / "gate")
    keys = queue_keyed("chaos.hold", [(f"late-{number}", gate) for number in range(threads)])
    outcome = Outcome("late outcomes", threads)
    args = ("--queue", "chaos", "--threads", str(threads), "--tick", "0.1")
    with Workers("late", log_dir, *args, worker_timeout=timeout) as pool:
        frozen = pool.start()
        running = TaskExec.objects.filter(task_name="chaos.hold", state=States.PROCESSING)
        running_in = lambda label: running.filter(worker__label=label).count()  # noqa: E731
        wait_for(lambda: running_in(frozen) == threads, timeout=120, message="the tasks to run")
        outcome.in_flight = threads
        pool.processes[frozen].send_signal(signal.SIGSTOP)
        replacing = pool.start()
        wait_for(lambda: running_in(replacing) == threads, timeout=120, message="the replacements")
        Path(gate).touch()
        wait_for(lambda: not unfinished_count("chaos.hold"), timeout=120, message="the replacements to end")
        pool.processes[frozen].send_signal(signal.SIGCONT)
        refused = lambda: pool.log(frozen).count("was taken from this worker before it finished")  # noqa: E731
        wait_for(lambda: refused() == threads, timeout=120, message="the late outcomes to be refused")
        outcome.facts["late outcomes refused"] = refused()
        first_runs = TaskExec.objects.filter(task_name="chaos.hold", worker__label=frozen)
        outcome.facts["first runs"] = dict(Counter(first_runs.values_list("state", flat=True)))
        outcome.problems = pool.problems(pool.stop())
    return count_keyed(outcome, "chaos.hold", keys)


def attached_cluster():
    """The PostgreSQL cluster of this test run (tests/run.py made it), or None."""
    datadir = os.environ.get("TOOSIMPLEQ_PG_DATADIR")
    if connection.vendor != "postgresql" or not datadir:
        return None
    return PostgresCluster.attach(datadir, int(os.environ["TOOSIMPLEQ_PG_PORT"]), os.environ["TOOSIMPLEQ_PG_BINDIR"])


def restart_database(log_dir, *, workers, threads, tasks, restarts):
    """Restart PostgreSQL (pg_ctl restart -m fast) ``restarts`` times while the workers run."""
    cluster = attached_cluster()
    keys = short_tasks(tasks, "restart")
    outcome = Outcome("postgres restart", tasks)
    outcome.facts["restarts"] = restarts
    with Workers("restarted", log_dir, "--queue", "chaos", "--threads", str(threads), "--tick", "0.1") as pool:
        for _ in range(workers):
            pool.start()
        pool.wait_registered()
        for restart in range(1, restarts + 1):
            # Evenly through the run: after a share of the tasks is done.
            wait_for(
                lambda: Execution.objects.count() >= tasks * restart / (restarts + 1),
                timeout=120,
                interval=0.1,
                message="tasks to be done",
            )
            cluster.restart(mode="fast")
            connection.close()  # this process's connection went with the server
        settle("chaos.work", timeout=60 + tasks / 10)
        outcome.facts["workers alive"] = len(pool.alive())
        outcome.problems = pool.problems(pool.stop())
    return count_keyed(outcome, "chaos.work", keys)


def outlive_the_timeout(log_dir, *, workers, threads, tasks, timeout, outage):
    """Stop PostgreSQL for ``outage`` seconds, longer than the workers' ``timeout``, while tasks run.

    No worker could beat while it was away: the first to reconnect must not
    take the others for dead. The tasks wait for a gate, opened once every
    worker had its full timeout to beat again since the database came back.
    """
    cluster = attached_cluster()
    gate = str(Path(log_dir) / "gate")
    keys = queue_keyed("chaos.hold", [(f"outage-{number}", gate) for number in range(tasks)])
    outcome = Outcome("long outage", tasks)
    outcome.facts["outage"] = outage
    args = ("--queue", "chaos", "--threads", str(threads), "--tick", "0.1")
    # The timeout outlasts the longest pause between a worker's reconnection attempts.
    with Workers("outage", log_dir, *args, worker_timeout=timeout) as pool:
        for _ in range(workers):
            pool.start()
        pool.wait_registered()
        running = TaskExec.objects.filter(task_name="chaos.hold", state=States.PROCESSING)
        wait_for(lambda: running.count() == tasks, timeout=120, message="every task to run")
        outcome.in_flight = tasks
        cluster.stop(mode="fast")
        connection.close()
        time.sleep(outage)
        cluster.start()
        back = timezone.now()
        live = WorkerStatus.objects.filter(stopped__isnull=True)
        wait_for(lambda: not live.filter(last_tick__lt=back).exists(), timeout=120, message="every worker to beat")
        # A wrongful reaping happens at the first heartbeat after the outage:
        # give it time to happen, and the rule's own timeout to run out.
        time.sleep(timeout + 1)
        outcome.facts["interrupted during the wait"] = TaskExec.objects.filter(state=States.INTERRUPTED).count()
        Path(gate).touch()
        settle("chaos.hold", timeout=120)
        outcome.problems = pool.problems(pool.stop())
    return count_keyed(outcome, "chaos.hold", keys)


def sqlite_writers(log_dir, *, workers, threads, tasks):
    """Workers on SQLite while another process writes rows all along."""
    keys = short_tasks(tasks, "sqlite")
    outcome = Outcome("sqlite writers", tasks)
    writer = subprocess.Popen(
        [sys.executable, "manage.py", "chaos_writer", "--settings", "tests.settings"],
        cwd=REPO_DIR,
        env=worker_env(TOOSIMPLEQ_TEST_CHAOS_APP="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    with Workers("sqlite", log_dir, "--queue", "chaos", "--threads", str(threads), "--tick", "0.1") as pool:
        try:
            wait_for(lambda: Execution.objects.filter(key__startswith="writer").exists(), timeout=60, message="writes")
            for _ in range(workers):
                pool.start()
            settle("chaos.work", timeout=60 + tasks / 10)
        finally:
            writer.send_signal(signal.SIGTERM)
            written, writer_errors = writer.communicate(timeout=60)
        outcome.problems = pool.problems(pool.stop())
    if writer.returncode != 0:
        outcome.problems.append(f"the writer exited {writer.returncode}: {writer_errors}")
    outcome.facts["rows written meanwhile"] = int(written or 0)
    outcome.facts["locked at ERROR"] = sum(
        "locked" in problem for problem in outcome.problems if ": ERROR" in problem
    )
    return count_keyed(outcome, "chaos.work", keys)


def stop_during_long_tasks(log_dir, *, within, beyond, grace):
    """SIGTERM a worker running tasks of which ``within`` end in the grace period, ``beyond`` after it."""
    gates = Path(log_dir)
    within_gate, beyond_gate = str(gates / "within"), str(gates / "beyond")
    keys = queue_keyed("chaos.hold", [(f"within-{number}", within_gate) for number in range(within)])
    keys += queue_keyed("chaos.hold", [(f"beyond-{number}", beyond_gate) for number in range(beyond)])
    outcome = Outcome("sigterm", within + beyond)
    with Workers("stopped", log_dir, "--queue", "chaos", "--tick", "0.1") as pool:
        first = pool.start("--threads", str(within + beyond), "--grace", str(grace))
        wait_for(
            lambda: TaskExec.objects.filter(state=States.PROCESSING).count() == within + beyond,
            timeout=120,
            message="every task to run",
        )
        pool.processes[first].send_signal(signal.SIGTERM)
        Path(within_gate).touch()
        # The tasks beyond the grace still wait: a worker that waited for
        # their threads would not exit until this times out.
        outcome.facts["exit code"] = pool.processes[first].wait(timeout=grace + 60)
        outcome.facts["states"] = dict(
            Counter(
                f"{args[0].split('-')[0]} {state}"
                for args, state in TaskExec.objects.filter(worker__label=first).values_list("args", "state")
            )
        )
        Path(beyond_gate).touch()
        second = pool.start("--threads", "2", "--until_done")
        pool.processes[second].wait(timeout=120)
        outcome.facts["run again by the other worker"] = TaskExec.objects.filter(
            worker__label=second, replaces__worker__label=first, state=States.SUCCEEDED
        ).count()
        # The first one's exit code is a fact to check: 77.
        outcome.problems = pool.problems({second: pool.processes[second].returncode})
    return count_keyed(outcome, "chaos.hold", keys)


def kill_schedulers(log_dir, *, workers, seconds, interval):
    """A per-second catch-up schedule, run by workers one of which is SIGKILLed every ``interval`` seconds."""
    outcome = Outcome("schedules", 0)
    args = ("--queue", "chaos_tick", "--tick", "0.2", "--threads", "2")
    with Workers("scheduler", log_dir, *args) as pool:
        for _ in range(workers):
            pool.start()
        pool.wait_registered()
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            time.sleep(interval)
            pool.kill(random.choice(pool.alive()))
            outcome.kills += 1
            pool.wait_registered([pool.start()])
        end = timezone.now() - datetime.timedelta(seconds=1)
        # However loaded the machine, the living schedulers catch up with the clock.
        wait_for(lambda: schedule_row().last_due >= end, timeout=60, message="the schedule to catch up")
        outcome.problems = pool.problems(pool.stop())
    queued = Counter(execution.kwargs["when"] for execution in TaskExec.objects.filter(task_name="chaos.tick"))
    due_times = sorted(queued)
    outcome.tasks = int((due_times[-1] - due_times[0]).total_seconds()) + 1 if due_times else 0
    outcome.lost = outcome.tasks - len(due_times)
    outcome.duplicated = sum(count - 1 for count in queued.values())
    outcome.stuck = None  # due times have no end to reach
    outcome.facts["last due queued"] = bool(due_times) and schedule_row().last_due == due_times[-1]
    return outcome


def poison_task(log_dir, *, workers, threads, tasks):
    """A task that kills its worker (os._exit) among ``tasks`` ordinary ones.

    Each worker that dies is replaced, as a supervisor (systemd, Kubernetes)
    would. The poison task may run TOOSIMPLEQ_MAX_INTERRUPTIONS times, then
    ends FAILED; the ordinary tasks all succeed, once.
    """
    keys = short_tasks(tasks, "ordinary")
    queue_keyed("chaos.poison", [("poison",)])
    outcome = Outcome("poison", tasks)
    args = ("--queue", "chaos", "--threads", str(threads), "--tick", "0.1")
    with Workers("poisoned", log_dir, *args, worker_timeout=5) as pool:
        for _ in range(workers):
            pool.start()
        replaced = set()
        deadline = time.monotonic() + 120 + tasks / 10
        while (unfinished_count("chaos.work") or unfinished_count("chaos.poison")) and time.monotonic() < deadline:
            for label in set(pool.processes) - set(pool.alive()) - replaced:
                replaced.add(label)
                outcome.kills += 1
                # Its other tasks run again: they were in flight.
                outcome.in_flight += TaskExec.objects.filter(
                    worker__label=label, state=States.PROCESSING, task_name="chaos.work"
                ).count()
                pool.start()
            time.sleep(0.2)
        exit_codes = pool.stop()
        # The poison's end is logged as an error, by design.
        outcome.problems = [problem for problem in pool.problems(exit_codes) if "chaos.poison" not in problem]
    poison_rows = TaskExec.objects.filter(task_name="chaos.poison").order_by("id")
    outcome.facts["poison runs"] = Execution.objects.filter(key__startswith="poison run").count()
    outcome.facts["poison states"] = [row.state for row in poison_rows]
    outcome.facts["poison error"] = poison_rows.last().error
    count_keyed(outcome, "chaos.work", keys)
    outcome.stuck += unfinished_count("chaos.poison")
    return outcome


def schedule_row():
    return ScheduleExec.objects.get(name="chaos.tick")


SCENARIOS = {
    "kill -9": kill_workers,
    "kill -9 batches": functools.partial(kill_workers, scenario="kill -9 batches"),
    "late outcomes": refuse_late_outcomes,
    "postgres restart": restart_database,
    "long outage": outlive_the_timeout,
    "sqlite writers": sqlite_writers,
    "sigterm": stop_during_long_tasks,
    "schedules": kill_schedulers,
    "poison": poison_task,
}


def run(scenario, log_dir):
    """Run ``scenario`` at the size asked for; report and return its Outcome."""
    outcome = SCENARIOS[scenario](log_dir, **sizes(scenario))
    outcome.report()
    return outcome
