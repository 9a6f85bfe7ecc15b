"""The baseline: the engine's method in plain DB-API, with no Django.

    python -m bench.baseline --threads 8 [--batch] [--serve] [--tick 1.0]

One loop thread claims at most as many tasks as it has free threads, with one
UPDATE ... RETURNING per batch (the statement of django_toosimple_q/store.py); a
ThreadPoolExecutor runs them, each thread on its own connection, and stores
each outcome with one fenced UPDATE. That is the least work the method
allows: the engine's figures are measured against it.

With --batch it commits outcomes as group commit does: a thread that ends a
task hands its outcome over and is free; unless another thread is writing,
it writes, in one transaction, what was handed over (at most MOST outcomes:
one UPDATE ... FROM (VALUES ...) on PostgreSQL, one executemany on SQLite),
then what was handed over meanwhile. A lone outcome waits for nothing. Its
rows are stamped ``finished`` when written: the drain, timed to the last
``finished``, ends once every outcome is committed, however far the writer
fell behind the tasks (on SQLite it may sleep in the busy handler while the
claims go on, and be left with thousands of outcomes to write).

Without --serve it drains the table and exits, printing {"started": EPOCH},
when its loop started (before connecting, as the engine's clock does). With
--serve it prints "ready" and waits for work until SIGTERM: on PostgreSQL it
LISTENs for the enqueuer's NOTIFY; on SQLite it waits on a Unix socket that
the enqueuer pokes after each commit (``poke``), as the engine's workers do.
Either way it also looks once a tick.
"""

import argparse
import json
import os
import queue
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from bench import rows, runs
from bench.database import Database

FINISH = (
    f"UPDATE {rows.TASKS} SET state = 'SUCCEEDED', finished = %s, result = %s, result_preview = %s, "
    f"stdout = '', stderr = '' WHERE id = %s AND state = 'PROCESSING' AND worker_id = %s"
)

# PostgreSQL's batch of FINISH, one row of VALUES per outcome (FINISH's parameters, in order).
FINISH_VALUES = (
    f"UPDATE {rows.TASKS} AS task SET state = 'SUCCEEDED', finished = outcome.finished, result = outcome.result, "
    "result_preview = outcome.preview, stdout = '', stderr = '' FROM (VALUES {values}) "
    "AS outcome(finished, result, preview, id, worker_id) "
    "WHERE task.id = outcome.id AND task.state = 'PROCESSING' AND task.worker_id = outcome.worker_id"
)
FINISH_VALUES_ROW = "(%s::timestamptz, %s::jsonb, %s, %s::bigint, %s::bigint)"

# Outcomes written in one transaction at most: the engine's TOOSIMPLEQ_FINISH_BATCH by default.
MOST = 50

# The task bodies, by name: what the engine's registry would run.
BODIES = {
    rows.NOOP: lambda: None,
    rows.FRAMEWORK_NOOP["task_name"]: lambda: None,
    rows.STAMP: time.time,
    rows.COUNTED: runs.record,
}


def claim_sql(db):
    """The engine's claim statement (django_toosimple_q/store.py), parameters: started, worker_id, limit."""
    # SQLite is told the index, as in the engine: it has no statistics to choose it by.
    indexed_by = " INDEXED BY toosimpleq_claim_idx" if db.vendor == "sqlite" else ""
    select = f"SELECT id FROM {rows.TASKS}{indexed_by} WHERE state = 'QUEUED' ORDER BY priority DESC, due, id LIMIT %s"
    if db.vendor == "postgres":
        # As in the engine: the subquery of ARRAY() runs once, where PostgreSQL
        # may run an IN (subquery) again per row, locking and claiming more.
        among = f"= ANY(ARRAY({select} FOR UPDATE SKIP LOCKED))"
    else:
        among = f"IN ({select})"
    return (
        f"UPDATE {rows.TASKS} SET state = 'PROCESSING', started = %s, worker_id = %s, dedup_key = NULL "
        f"WHERE state = 'QUEUED' AND id {among} RETURNING id, task_name, args, kwargs"
    )


def explain_claim(db, connection):
    """The query plan of the claim, one line per step."""
    params = [db.now(), None, 8]
    if db.vendor == "sqlite":
        return [row[-1] for row in db.execute(connection, "EXPLAIN QUERY PLAN " + claim_sql(db), params)]
    return [row[0] for row in db.execute(connection, "EXPLAIN " + claim_sql(db), params)]


def wake_up_address(db):
    """SQLite: the socket of the serving baseline."""
    return db.env["BENCH_SQLITE_PATH"] + "-baseline.sock"


_sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)


def poke(db):
    """SQLite: wake the serving baseline, once the enqueuer's row is committed."""
    _sender.sendto(b"", wake_up_address(db))


class Baseline:
    def __init__(self, db, threads, serve, tick, batch=False):
        self.db = db
        self.threads = threads
        self.store = self.store_in_batches if batch else self.store_alone
        self.handed_over = queue.SimpleQueue()  # outcomes not written yet, under --batch
        self.writing = threading.Lock()
        self.serve = serve
        self.tick = tick
        self.stopping = threading.Event()
        self.task_done = threading.Event()
        self.running = 0
        self.running_lock = threading.Lock()
        self.local = threading.local()
        self.error = None
        self.worker_id = None
        self.claim_sql = claim_sql(db)

    def run(self):
        connection = self.db.connect()
        # The engine's claim fills in worker_id, whose foreign key check is part
        # of its cost: borrow the row of the engine's last worker.
        self.worker_id = rows.Table(self.db, connection).last_worker_id()
        if self.serve and self.db.vendor == "postgres":
            connection.execute(f"LISTEN {rows.CHANNEL}")
        elif self.serve:
            self.wake_up = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.wake_up.bind(wake_up_address(self.db))
            self.wake_up.settimeout(self.tick)
        with ThreadPoolExecutor(self.threads) as pool:
            if self.serve:
                print("ready", flush=True)
            while not self.stopping.is_set():
                self.task_done.clear()
                free = self.threads - self.running
                claimed = self.claim(connection, free) if free else []
                for task in claimed:
                    with self.running_lock:
                        self.running += 1
                    pool.submit(self.execute, task).add_done_callback(self.finished)
                if claimed and len(claimed) == free:
                    continue
                if self.running:
                    self.task_done.wait(self.tick)
                elif self.serve:
                    self.wait_for_work(connection)
                elif not claimed:
                    return

    def claim(self, connection, limit):
        params = [self.db.now(), self.worker_id, limit]
        if self.db.vendor == "postgres":
            return self.db.execute(connection, self.claim_sql, params).fetchall()
        # No row locks in SQLite: take the write lock first, as the engine does.
        connection.execute("BEGIN IMMEDIATE")
        try:
            claimed = self.db.execute(connection, self.claim_sql, params).fetchall()
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return claimed

    def execute(self, task):
        task_id, task_name, args, _kwargs = task
        value = BODIES[task_name](*rows.decoded(args))
        result = None if value is None else json.dumps(value)
        self.store([self.db.now(), result, repr(value), task_id, self.worker_id])

    def connection(self):
        """This thread's connection."""
        if not hasattr(self.local, "connection"):
            self.local.connection = self.db.connect()
        return self.local.connection

    def store_alone(self, outcome):
        self.db.execute(self.connection(), FINISH, outcome)

    def store_in_batches(self, outcome):
        """Hand ``outcome`` over, and write what was handed over unless another thread is writing.

        The thread is free again at hand-off: the writer of the moment takes
        the outcome in its next batch. After each batch the writer looks
        again, so that nothing handed over while it wrote is left behind.
        """
        self.handed_over.put(outcome)
        while not self.handed_over.empty() and self.writing.acquire(blocking=False):
            try:
                batch = []
                while len(batch) < MOST and not self.handed_over.empty():
                    batch.append(self.handed_over.get())
                if batch:  # another writer may have taken it between our look and our lock
                    self.write(batch)
            finally:
                self.writing.release()

    def write(self, outcomes):
        """The outcomes in one transaction, each UPDATE fenced as FINISH is, and stamped finished now."""
        connection = self.connection()
        now = self.db.now()
        outcomes = [[now, *outcome[1:]] for outcome in outcomes]
        if self.db.vendor == "postgres":
            values = ", ".join([FINISH_VALUES_ROW] * len(outcomes))
            connection.execute(FINISH_VALUES.format(values=values), [value for row in outcomes for value in row])
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(FINISH.replace("%s", "?"), outcomes)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def finished(self, future):
        if future.exception() is not None:
            # A failed finishing UPDATE would make the figures wrong: stop.
            self.error = future.exception()
            self.stopping.set()
        with self.running_lock:
            self.running -= 1
        self.task_done.set()

    def wait_for_work(self, connection):
        if self.db.vendor == "postgres":
            for _notification in connection.notifies(timeout=self.tick, stop_after=1):
                pass
        else:
            try:
                self.wake_up.recv(1)
            except TimeoutError:
                pass


def main():
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", action="store_true", help="commit the outcomes that finished meanwhile together")
    parser.add_argument("--serve", action="store_true", help="wait for work until SIGTERM instead of draining")
    parser.add_argument("--tick", type=float, default=1.0, help="seconds between two polls when idle")
    args = parser.parse_args()
    db = Database(os.environ)
    started = time.time()
    baseline = Baseline(db, args.threads, args.serve, args.tick, args.batch)
    signal.signal(signal.SIGTERM, lambda signum, frame: baseline.stopping.set())
    baseline.run()
    if baseline.error is not None:
        raise baseline.error
    if not args.serve:
        json.dump({"started": started}, sys.stdout)


if __name__ == "__main__":
    main()
