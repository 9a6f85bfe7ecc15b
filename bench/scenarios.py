"""The scenarios of the benchmark, each measured on the engine and on the baseline.

Drains are timed from the start of the worker's loop to the last finished
row: for the engine, from WorkerStatus.started (written as its loop begins,
after Django has started) to max(TaskExec.finished); for the baseline, from
the start of its loop (before it connects, as the engine) to the same
max(finished). Both clocks are the machine's. Django's start-up is left out;
connecting to the database is counted on both sides.
"""

import contextlib
import dataclasses
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

from bench import baseline, latency, processes, proxy, runs
from bench.database import to_epoch
from bench.report import Row
from bench.rows import COUNTED, FRAMEWORK_NOOP, NOOP, STAMP, Table

logger = logging.getLogger("bench")

# The targets are for one worker with 8 threads.
THREADS = 8

# Rows per INSERT of queue_many(), which the bulk baseline does the same way.
ROWS_PER_INSERT = 40

# What runs a drain: the engine's worker, the baseline (an UPDATE and a commit
# per outcome), or the baseline that commits its outcomes as group commit does.
ENGINE, BASELINE, BATCHED = "engine", "baseline", "batched baseline"

# Issue 14's targets for the 8-thread drain, against the per-task baseline.
GROUP_COMMIT_TARGETS = {"sqlite": 1.5, "postgres": 1.2}

# The scale scenario's numbers of worker processes, each with THREADS threads.
WORKER_PROCESSES = (1, 2, 4)

# The remote scenario's delay of each chunk, each way: a 1 ms round trip.
ONE_WAY_DELAY = 0.0005


@dataclass(frozen=True)
class Config:
    tasks: int  # enqueued, and drained by each drain but the memory ones
    history: int  # finished rows already in the table for the history drain
    memory: tuple  # the two drain sizes whose peak RSS is compared
    samples: int  # pickup latency measurements
    repeat: int  # runs of each throughput drain, of which the median is shown
    tick: float  # the idle poll interval of the pickup scenario's baseline (the engine's worker: its default)
    backlog: int  # tasks waiting in another queue for the backlog scenario
    scale: int  # tasks drained by each number of worker processes in the scale scenario
    only: tuple = ()  # the scenarios to run (names of SCENARIOS); empty: all


@dataclass(frozen=True)
class Drain:
    rate: float  # tasks/s
    peak_rss_mb: float  # the largest of its processes'
    twice: int = 0  # counted tasks that ran more than once


# What --only chooses from, in the order they run.
SCENARIOS = ("enqueue", "drain", "framework", "signals", "pickup", "history", "memory", "backlog", "scale", "remote", "routed")

# Those that need a database server: skipped on SQLite.
POSTGRES_ONLY = ("scale", "remote", "routed")

# The queue whose deep backlog the backlog scenario's workers must not feel.
BULK = "bulk"


class Scenarios:
    """Every scenario on one database; ``run()`` returns the table's rows."""

    def __init__(self, db, config):
        self.db = db
        self.config = config
        self.rows = []
        self.notes = []  # lines printed under the table
        self.table = None

    def run(self):
        with self.opened():
            if self.runs("enqueue"):
                self.enqueue_rate()
            else:
                self.save_template()
            needs_drain = any(self.runs(scenario) for scenario in ("drain", "framework", "history", "routed"))
            empty = self.drain_rate() if needs_drain else None
            if self.runs("framework"):
                self.framework_drain(empty)
            if self.runs("signals"):
                self.signal_cost()
            if self.runs("pickup"):
                self.pickup_latency()
            if self.runs("history"):
                self.history_cost(empty)
            if self.runs("memory"):
                self.memory()
            if self.runs("backlog"):
                self.backlog_pickup()
            if self.runs("scale"):
                self.scale()
            if self.runs("remote"):
                self.remote_database()
            if self.runs("routed"):
                self.queue_database_apart(empty)
        return self.rows

    @contextlib.contextmanager
    def opened(self):
        """The database migrated, and self.table on a connection of its own meanwhile."""
        logger.info("%s: migrating", self.db.vendor)
        processes.run(processes.manage("migrate", "--verbosity", "0"), self.db)
        if self.db.queue_apart:
            processes.run(processes.manage("migrate", "--database", "queue", "--verbosity", "0"), self.db)
        with contextlib.closing(self.db.connect()) as connection:
            self.table = Table(self.db, connection)
            yield

    def save_template(self):
        """The rows of the scenarios are copies of a row queue() wrote."""
        processes.run(processes.client("enqueue", "1"), self.db)
        self.table.save_template()

    def runs(self, scenario):
        if scenario in POSTGRES_ONLY and self.db.vendor != "postgres":
            return False
        return not self.config.only or scenario in self.config.only

    def add(self, figure, engine, baseline, target="", met=None):
        self.rows.append(Row(self.db.vendor, figure, engine, baseline, target, met))

    # 1. Enqueue rate.

    def enqueue_rate(self):
        """Each figure the median of ``repeat`` runs, the engine's and the baseline's alternating.

        A run of one queue_many() lasts tens of milliseconds: one run alone
        is at the mercy of whatever else the machine does meanwhile.
        """
        count = self.config.tasks
        logger.info("%s: enqueueing %s tasks, one transaction each, then in one queue_many()", self.db.vendor, count)
        self.save_template()

        def singles():
            for _ in range(count):
                self.table.enqueue(NOOP)

        def bulk():
            self.table.enqueue_many(NOOP, count, ROWS_PER_INSERT)

        single, many = [], []
        for _ in range(self.config.repeat):
            single.append(self.enqueue_times("enqueue", singles))
            many.append(self.enqueue_times("enqueue-many", bulk))
        for figure, runs in (
            ("enqueue: single queue() calls (tasks/s)", single),
            ("enqueue: one queue_many() (tasks/s)", many),
        ):
            self.add(figure, *(count / statistics.median(seconds) for seconds in zip(*runs)))

    def enqueue_times(self, action, baseline):
        """The seconds of the engine's ``bench.client action``, then of ``baseline()``, each from a WAL written back.

        SQLite writes its WAL back to the database file at the commit that
        takes it past 1,000 pages: whichever side came second would pay for
        the pages of the first.
        """
        self.table.write_back()
        engine = processes.run(processes.client(action, str(self.config.tasks)), self.db).json()["seconds"]
        self.table.write_back()
        started = time.perf_counter()
        baseline()
        return engine, time.perf_counter() - started

    # 2. Drain.

    def drain(self, side, tasks, threads, history=0, db=None, queued_as=None, workers=1, counted=False):
        """Run ``workers`` processes of ``side`` (ENGINE, BASELINE or BATCHED) until ``tasks`` queued tasks are done.

        ``db``: the database as both sides' processes reach it, and the
        engine's settings. ``counted``: the tasks are COUNTED ones, and the
        Drain says how many ran twice.
        """
        logger.info(
            "%s: %s x %s draining %s tasks on %s thread(s), %s finished rows",
            self.db.vendor, workers, side, tasks, threads, history,
        )
        if counted:
            queued_as = {"task_name": COUNTED}
        self.table.reset(queued=tasks, finished=history, queued_as=queued_as, numbered=counted)
        with tempfile.TemporaryDirectory(prefix="toosimpleq-bench-runs-") as directory:
            runs_path = os.path.join(directory, "runs")
            env = (db or self.db).with_env(**{runs.VARIABLE: runs_path})
            if side == ENGINE:
                command = processes.manage("worker", "--until_done", "--threads", str(threads))
            else:
                command = processes.baseline("--threads", str(threads), *(["--batch"] if side == BATCHED else []))
            finished = [processes.wait(process) for process in [processes.start(command, env) for _ in range(workers)]]
            twice = self.count_twice(runs_path, tasks) if counted else 0
        if side == ENGINE:
            started = min(to_epoch(self.table.worker_started(process.pid)) for process in finished)
        else:
            started = min(process.json()["started"] for process in finished)
        unfinished = self.table.count_unfinished()
        if unfinished:
            raise RuntimeError(f"{side} left {unfinished} task(s) not SUCCEEDED")
        rate = tasks / (to_epoch(self.table.last_finished()) - started)
        return Drain(rate, max(process.peak_rss_mb for process in finished), twice)

    @staticmethod
    def count_twice(runs_path, tasks):
        """The runs beyond the first recorded in ``runs_path``; raises if one of ``tasks`` never ran."""
        counts = runs.read(runs_path)
        if set(counts) != set(range(1, tasks + 1)):
            raise RuntimeError(f"{tasks - len(counts)} counted task(s) never ran")
        return sum(counts.values()) - len(counts)

    def drains(self, tasks, threads, repeat=None, sides=(ENGINE, BASELINE), **options):
        """The Drain of each of ``sides``, each the median of ``repeat`` alternating runs; ``options``: drain()'s.

        On a small shared machine one drain varies by some 20% from the next:
        a median is what two figures can be compared on. Its ``twice`` counts
        the tasks run twice in all the runs.
        """
        runs_of = {side: [] for side in sides}
        for _ in range(repeat or self.config.repeat):
            for side, drains in runs_of.items():
                drains.append(self.drain(side, tasks, threads, **options))
        medians = [sorted(drains, key=lambda drain: drain.rate)[len(drains) // 2] for drains in runs_of.values()]
        return [
            dataclasses.replace(median, twice=sum(drain.twice for drain in drains))
            for median, drains in zip(medians, runs_of.values())
        ]

    def drain_rate(self):
        """Drains the empty table with 1 and 8 threads; returns the 8-thread Drains of the engine and the baseline."""
        tasks = self.config.tasks
        target = GROUP_COMMIT_TARGETS[self.db.vendor]
        for threads in (1, THREADS):
            engine, raw, batched = self.drains(tasks, threads, sides=(ENGINE, BASELINE, BATCHED))
            figure = f"drain {tasks:,} tasks, {threads} thread{'s' if threads > 1 else ''} (tasks/s)"
            if threads == THREADS:
                self.add(figure, engine.rate, raw.rate, f">= {target}x", engine.rate >= target * raw.rate)
                met = engine.rate >= 0.8 * batched.rate
                self.add("  the same, baseline batched", engine.rate, batched.rate, ">= 0.8x", met)
            else:
                self.add(figure, engine.rate, raw.rate)
                self.add("  the same, baseline batched", engine.rate, batched.rate)
        if self.db.vendor == "postgres":
            # Behind a pooler in transaction mode the engine prepares nothing
            # (TOOSIMPLEQ_PREPARED_STATEMENTS = False); the baseline still does.
            unprepared, unprepared_raw = self.drains(tasks, THREADS, db=self.db.without_prepared_statements())
            self.add("  the same, prepared statements off", unprepared.rate, unprepared_raw.rate)
        return engine, raw

    def framework_drain(self, native):
        """The 8-thread drain of tasks queued through django.tasks; ``native``: the Drains of the native API's."""
        tasks = self.config.tasks
        engine, raw = self.drains(tasks, THREADS, queued_as=FRAMEWORK_NOOP)
        self.add(f"drain {tasks:,} django.tasks tasks, {THREADS} threads (tasks/s)", engine.rate, raw.rate)
        # The baseline runs both kinds of row alike: its ratio shows the noise.
        ratios = [framework.rate / drain.rate for framework, drain in zip((engine, raw), native)]
        self.add("  the same / queued with the native API", *ratios, ">= 0.90", ratios[0] >= 0.9)
        # Django's own receivers of task_started and task_finished log each task at INFO.
        quiet, quiet_raw = self.drains(tasks, THREADS, queued_as=FRAMEWORK_NOOP, db=self.db.with_quiet_task_log())
        ratios = [framework.rate / drain.rate for framework, drain in zip((quiet, quiet_raw), native)]
        self.add("  the same, django.tasks logging at WARNING / native", *ratios)

    def signal_cost(self):
        """The 8-thread drain with the lifecycle signals sent to no receiver, against the same with the sends patched off.

        The two alternate, and each figure is the median of its runs: what
        the sends cost is far below the noise between two drains.
        """
        tasks = self.config.tasks
        sent, off = [], []
        for _ in range(self.config.repeat):
            sent.append(self.drain("engine", tasks, THREADS).rate)
            off.append(self.drain("engine", tasks, THREADS, db=self.db.with_signal_sends_off()).rate)
        sent, off = statistics.median(sent), statistics.median(off)
        figure = f"drain {tasks:,} tasks, {THREADS} threads, signals to no receiver (tasks/s; baseline: sends patched off)"
        self.add(figure, sent, off, ">= 0.95x", sent / off >= 0.95)

    # 3. Pickup latency.

    def pickup_latency(self):
        """From the enqueuer's commit to the task body's first line, one task at a time.

        The enqueuer's commit wakes the idle worker (NOTIFY on PostgreSQL, a
        poke of its socket on SQLite). Each task is queued as soon as the
        previous one finished, just after the worker looked for work: a
        task the wake-up missed would wait a whole tick.
        """
        engine = self.engine_pickups()
        embedded = self.engine_pickups(embedded=True)
        raw = self.baseline_pickups()
        p50 = [statistics.median(latencies) * 1000 for latencies in (engine, raw)]
        p95 = [statistics.quantiles(latencies, n=20)[-1] * 1000 for latencies in (engine, raw)]
        self.add("pickup latency p50 (ms)", *p50, "<= 10 ms", p50[0] <= 10)
        self.add("pickup latency p95 (ms)", *p95)
        # queue() in the worker's own process wakes it at commit, on any database.
        self.add("  p50, embedded worker (ms)", statistics.median(embedded) * 1000, p50[1])

    def _pickup_timeout(self):
        return 10 * self.config.tick + 10

    def engine_pickups(self, embedded=False, worker_args=(), backlog=0):
        """Latencies of queue() in a client, picked up by a worker command or by the client's embedded worker.

        ``worker_args``: the worker command's queue options; ``backlog``:
        tasks left waiting meanwhile in the queue BULK.
        """
        kind = "embedded" if embedded else f"worker command {' '.join(worker_args)}"
        logger.info(
            "%s: engine pickup latency, %s, %s tasks, %s waiting in %s",
            self.db.vendor, kind, self.config.samples, backlog, BULK,
        )
        self.table.reset(queued=0, waiting_elsewhere=(BULK, backlog))
        command = processes.client("latency", str(self.config.samples), "--timeout", str(self._pickup_timeout()))
        if embedded:
            return processes.run([*command, "--embedded"], self.db).json()["latencies"]
        # At its default tick: what picks the task up is the wake-up, not a poll.
        worker = processes.start(processes.manage("worker", *worker_args), self.db)
        try:
            latency.wait_until(lambda: self.table.worker_started(worker.pid), timeout=30, interval=0.05)
            return processes.run(command, self.db).json()["latencies"]
        finally:
            processes.stop(worker)

    def baseline_pickups(self):
        logger.info("%s: baseline pickup latency, %s tasks", self.db.vendor, self.config.samples)
        self.table.reset(queued=0)
        server = processes.start(processes.baseline("--serve", "--tick", str(self.config.tick)), self.db)
        try:
            server.stdout.readline()  # "ready": it listens, or polls
            return latency.measure(self.baseline_enqueue, self.table.result_of, self.config.samples, self._pickup_timeout())
        finally:
            processes.stop(server)

    def baseline_enqueue(self):
        task_id = self.table.enqueue(STAMP)
        if self.db.vendor == "sqlite":
            baseline.poke(self.db)  # on PostgreSQL the INSERT sent its NOTIFY
        return task_id

    # 4. History cost.

    def history_cost(self, empty):
        history, tasks = self.config.history, self.config.tasks
        self.explain_claim()
        engine, raw = self.drains(tasks, THREADS, history=history)
        figure = f"drain {tasks:,} tasks, {THREADS} threads, {history:,} finished rows (tasks/s)"
        self.add(figure, engine.rate, raw.rate)
        kept = [with_history.rate / without.rate for with_history, without in zip((engine, raw), empty)]
        self.add("  the same / on an empty table", *kept, ">= 0.90", kept[0] >= 0.9)

    def explain_claim(self):
        """Note the claim's query plan with the history scenario's rows in the table."""
        self.table.reset(queued=self.config.tasks, finished=self.config.history)
        plan = baseline.explain_claim(self.db, self.table.connection)
        uses = any("toosimpleq_claim_idx" in line for line in plan)
        self.notes.append(
            f"{self.db.vendor}: EXPLAIN of the claim, {self.config.history:,} finished rows: "
            f"{'uses' if uses else 'does NOT use'} toosimpleq_claim_idx"
        )
        self.notes += [f"    {line}" for line in plan]

    # 5. Memory.

    def memory(self):
        small, large = self.config.memory
        # A peak RSS hardly varies from run to run: one run each.
        engine_small, raw_small = self.drains(small, THREADS, repeat=1)
        engine_large, raw_large = self.drains(large, THREADS, repeat=1)
        self.add(f"worker peak RSS, {small:,} tasks (MB)", engine_small.peak_rss_mb, raw_small.peak_rss_mb)
        self.add(f"worker peak RSS, {large:,} tasks (MB)", engine_large.peak_rss_mb, raw_large.peak_rss_mb)
        growth = [
            at_large.peak_rss_mb / at_small.peak_rss_mb
            for at_small, at_large in ((engine_small, engine_large), (raw_small, raw_large))
        ]
        self.add(f"  peak RSS at {large:,} / at {small:,}", *growth, "< 1.10", growth[0] < 1.1)

    # 6. A deep backlog in another queue.

    def backlog_pickup(self):
        """Claim and pickup p50 of workers that do not serve BULK, with ``backlog`` tasks waiting there, and with none.

        The tasks go to the "default" queue. The baseline column is here the
        same worker with BULK empty: the ratio is what the backlog costs.
        """
        backlog = self.config.backlog
        limit = "<= 2x, <= 10 ms" if self.db.vendor == "postgres" else "<= 2x"
        for worker_args in (("--queue", "default"), ("--exclude_queue", BULK)):
            empty, deep = (self.claims(worker_args, waiting) for waiting in (0, backlog))
            figure = f"claim p50, worker {' '.join(worker_args)}, {backlog:,} waiting in {BULK} (ms; baseline: {BULK} empty)"
            self.add(figure, deep, empty, "<= 2x", deep <= 2 * empty)
            empty, deep = (
                statistics.median(self.engine_pickups(worker_args=worker_args, backlog=waiting)) * 1000
                for waiting in (0, backlog)
            )
            met = deep <= 2 * empty and (self.db.vendor != "postgres" or deep <= 10)
            figure = f"pickup p50, worker {' '.join(worker_args)}, {backlog:,} waiting in {BULK} (ms; baseline: {BULK} empty)"
            self.add(figure, deep, empty, limit, met)

    def claims(self, worker_args, backlog):
        """The p50 (ms) of the claim statement of a worker with ``worker_args``, ``backlog`` tasks waiting in BULK."""
        samples = self.config.samples
        logger.info("%s: claim, %s, %s waiting in %s", self.db.vendor, " ".join(worker_args), backlog, BULK)
        self.table.reset(queued=samples + 1, waiting_elsewhere=(BULK, backlog))
        latencies = processes.run(processes.client("claim", str(samples), *worker_args), self.db).json()["latencies"]
        return statistics.median(latencies) * 1000

    # 7. Scale: several worker processes on one PostgreSQL.

    def scale(self):
        """1, 2 and 4 processes of THREADS threads drain the same tasks; each task records its runs.

        The aggregate rate must not fall as processes are added (no lock
        convoy), and no task may run twice.
        """
        tasks = self.config.scale
        twice = [0, 0]
        for workers in WORKER_PROCESSES:
            drains = self.drains(tasks, THREADS, workers=workers, counted=True)
            named = f"{workers} process{'es' if workers > 1 else ''}"
            self.add(f"drain {tasks:,} tasks, {named} x {THREADS} threads (tasks/s)", *(drain.rate for drain in drains))
            if workers == 1:
                alone = drains
            else:
                gain = [drain.rate / single.rate for drain, single in zip(drains, alone)]
                self.add(f"  {workers} processes / 1 process", *gain, "no fall (>= 0.9, noise)", gain[0] >= 0.9)
            twice = [total + drain.twice for total, drain in zip(twice, drains)]
        self.add("  tasks run twice, in all the runs above", *twice, "0", twice[0] == 0)

    # 8. A database on another machine.

    def remote_database(self):
        """The 8-thread drain through a proxy that delays each way by ONE_WAY_DELAY, without and with group commit.

        Until the engine has TOOSIMPLEQ_FINISH_BATCH, both engine figures
        are the same engine's.
        """
        tasks = self.config.tasks
        with proxy.delaying(self.db.env["BENCH_PG_HOST"], int(self.db.env["BENCH_PG_PORT"]), ONE_WAY_DELAY) as port:
            remote = self.db.through_port(port)
            self.notes.append(self.round_trip_note(remote))
            figure = f"drain {tasks:,} tasks, {THREADS} threads, {2 * ONE_WAY_DELAY * 1000:g} ms round trip"
            single, raw = self.drains(tasks, THREADS, db=remote.with_finish_batch(1))
            self.add(f"{figure}, FINISH_BATCH=1 (tasks/s)", single.rate, raw.rate)
            grouped, batched = self.drains(tasks, THREADS, db=remote, sides=(ENGINE, BATCHED))
            self.add(f"{figure}, group commit (tasks/s; baseline batched)", grouped.rate, batched.rate)
            self.add("  group commit / FINISH_BATCH=1", grouped.rate / single.rate, batched.rate / raw.rate)

    def round_trip_note(self, remote, samples=100):
        """A note of the p50 of SELECT 1 on the direct connection and through ``remote``'s proxy."""
        p50 = []
        for db in (self.db, remote):
            with contextlib.closing(db.connect()) as connection:
                connection.execute("SELECT 1")  # connecting is not a round trip
                latencies = []
                for _ in range(samples):
                    started = time.perf_counter()
                    connection.execute("SELECT 1").fetchone()
                    latencies.append(time.perf_counter() - started)
            p50.append(statistics.median(latencies) * 1000)
        return (
            f"{self.db.vendor}: SELECT 1 round trip p50: {p50[0]:.2f} ms direct, "
            f"{p50[1]:.2f} ms through the delaying proxy"
        )

    # 9. The queue in a database of its own.

    def queue_database_apart(self, single):
        """The 8-thread drain with the queue's tables routed to a database of their own.

        ``single``: the engine's and the baseline's Drains with the queue in the application's database.
        """
        tasks = self.config.tasks
        apart = Scenarios(self.db.with_queue_database("bench_queue"), self.config)
        with apart.opened():
            apart.save_template()
            engine, raw = apart.drains(tasks, THREADS)
        figure = f"drain {tasks:,} tasks, {THREADS} threads, queue in a database of its own (tasks/s)"
        self.add(figure, engine.rate, raw.rate)
        # The baseline does the same in both: its ratio shows the noise.
        ratios = [apart.rate / alone.rate for apart, alone in zip((engine, raw), single)]
        self.add("  the same / queue in the application's database", *ratios)
