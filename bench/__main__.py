"""Benchmark django-toosimple-q against the physical limit of its method.

    python -m bench [--db sqlite|postgres|all] [--tasks N] [--quick] ...

Each database is a throwaway one: an SQLite file in WAL mode in a temporary
directory, or a PostgreSQL cluster of its own (tests/pgcluster.py). On each,
the engine (the real `manage.py worker`, queue() through Django) and the
baseline (bench/baseline.py: the same SQL in plain DB-API, no Django) run
the same scenarios on the same rows. The drains also run a second baseline
that commits its outcomes in batches, as group commit does (--batch):

1. enqueue rate: N queue() calls, each its own transaction; the baseline
   runs one INSERT per task (with its pg_notify on PostgreSQL), autocommit.
   Then one queue_many() of N calls; the baseline inserts as many rows, 40 per
   INSERT (as queue_many() does), in one transaction;
2. drain: N no-op tasks queued, then one worker with 1 and 8 threads runs
   until done (timed as bench/scenarios.py says; the median of --repeat runs),
   beside both baselines.
   Then the 8-thread drain of no-op tasks queued through Django's task
   framework (django.tasks, our backend), as a ratio to the native API's,
   also with the django.tasks logger at WARNING (Django logs each task at
   INFO); the baseline runs both kinds of rows alike. And the 8-thread drain
   with the lifecycle signals (django_toosimple_q.signals) sent to no
   receiver, against the same engine with the sends patched off;
3. pickup latency: an idle worker (at its default tick), then tasks queued
   one at a time, each once the previous one finished: from the commit of
   the enqueue to the task body starting. The baseline LISTENs on
   PostgreSQL (its enqueuer sends NOTIFY) and waits on a Unix socket on
   SQLite (its enqueuer pokes it after the commit), as the engine's worker
   does. Also with the worker embedded in the process that calls queue()
   (compared with the same baseline);
4. history cost: the 8-thread drain again, with finished rows in the table,
   and the EXPLAIN of the claim on that table;
5. memory: the worker's peak RSS while draining a small and a large number
   of tasks;
6. backlog: the claim and the pickup latency of a `worker --queue default` and of a
   `worker --exclude_queue bulk` with --backlog tasks waiting in `bulk`,
   beside the same with `bulk` empty.

PostgreSQL only:

7. scale: 1, 2 and 4 worker processes of 8 threads drain the same --scale
   tasks, each task recording its run: the aggregate rate, and the tasks
   run twice;
8. remote: the 8-thread drain through a TCP proxy that delays each way by
   0.5 ms (a database on another machine), with TOOSIMPLEQ_FINISH_BATCH = 1
   (one commit per outcome) beside the per-task baseline, then with group
   commit beside the batched baseline;
9. routed: the 8-thread drain with the queue's tables routed to a database
   of their own (Django's router), beside the drain in one database.

Progress goes to stderr; the table, the EXPLAIN and the machine's load to stdout.
"""

import argparse
import dataclasses
import logging
import os
import signal
import sys

from bench import database
from bench.report import format_table
from bench.scenarios import SCENARIOS, Config, Scenarios

# The baseline's tick in the pickup scenario: how long a wake-up it missed
# would cost it.
FULL = Config(
    tasks=5000,
    history=1_000_000,
    memory=(2000, 20_000),
    samples=100,
    repeat=3,
    tick=0.1,
    backlog=1_000_000,
    scale=20_000,
)
QUICK = Config(tasks=200, history=2000, memory=(200, 2000), samples=5, repeat=1, tick=0.1, backlog=2000, scale=200)


def parse_args():
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0], allow_abbrev=False)
    add = parser.add_argument
    add("--db", choices=(*database.VENDORS, "all"), default="all")
    add("--quick", action="store_true", help="small numbers, for a smoke run")
    add("--tasks", type=int, help=f"tasks enqueued, and drained (default {FULL.tasks})")
    add("--history", type=int, help=f"finished rows for the history drain (default {FULL.history})")
    add("--memory", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="drain sizes compared for peak RSS")
    add("--samples", type=int, help=f"pickup latency measurements (default {FULL.samples})")
    add("--repeat", type=int, help=f"runs of each drain; the median is shown (default {FULL.repeat})")
    add("--tick", type=float, help=f"idle poll interval of the pickup baseline (default {FULL.tick:g} s)")
    add("--backlog", type=int, help=f"tasks waiting in another queue for the backlog pickup (default {FULL.backlog:,})")
    add("--scale", type=int, help=f"tasks drained by 1, 2 and 4 worker processes (default {FULL.scale:,})")
    add("--only", choices=SCENARIOS, nargs="+", help="run only these scenarios (default: all)")
    return parser.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    # SIGTERM would end us without the cleanup that stops PostgreSQL.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    preset = QUICK if args.quick else FULL
    given = {field.name: getattr(args, field.name) for field in dataclasses.fields(Config)}
    config = dataclasses.replace(preset, **{name: value for name, value in given.items() if value is not None})
    vendors = list(database.VENDORS) if args.db == "all" else [args.db]
    if "postgres" in vendors and not database.postgres_installed():
        if args.db == "postgres":
            sys.exit("PostgreSQL is not installed (no initdb found)")
        logging.warning("PostgreSQL is not installed (no initdb found): skipping it")
        vendors.remove("postgres")

    # Whatever else runs on the machine shows in the figures: say how busy it was.
    load_before = os.getloadavg()[0]
    rows, notes = [], []
    for vendor in vendors:
        with database.throwaway(vendor) as db:
            scenarios = Scenarios(db, config)
            rows += scenarios.run()
            notes += scenarios.notes
    print(format_table(rows))
    print("\n".join(notes))
    print(f"{os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before the run, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
