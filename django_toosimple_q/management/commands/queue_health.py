import sys

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from ... import stats
from ...retention import parse_age
from .queue_stats import age


class Command(BaseCommand):
    help = (
        "Exit 0 with a one-line summary when the queues are healthy, else 1 with the reason: "
        "for container probes and for people."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-backlog", type=int, help="at most this many tasks waiting (QUEUED or SLEEPING)")
        parser.add_argument("--max-age", help="the oldest waiting task at most this old: 90s, 10m, 2h")
        parser.add_argument("--min-workers", type=int, help="at least this many workers online")
        parser.add_argument("--queue", action="append", help="judge only this queue (repeatable)")

    def handle(self, *args, **options):
        try:
            max_age = parse_age(options["max_age"]) if options["max_age"] is not None else None
        except ValueError as error:
            raise CommandError(f"--max-age: {error}") from None
        names = options["queue"] or ()
        try:
            snapshot = stats.collect(queues=names, recent=False)
        except DatabaseError as error:
            self.stderr.write(f"unhealthy: the database cannot be read ({error})".replace("\n", " "))
            sys.exit(1)
        queues = snapshot.queues_named(names)
        backlog = sum(queue.waiting for queue in queues)
        oldest = max((queue.oldest_waiting_age for queue in queues if queue.oldest_waiting_age), default=None)
        # With queues named, each of them needs the workers: the least served one counts.
        workers = min(queue.workers_online for queue in queues) if names else snapshot.workers_online
        problems = []
        if options["max_backlog"] is not None and backlog > options["max_backlog"]:
            problems.append(f"{backlog} tasks waiting, more than {options['max_backlog']}")
        if max_age is not None and oldest is not None and oldest > max_age:
            problems.append(f"the oldest waiting task is {age(oldest)} old, older than {age(max_age)}")
        if options["min_workers"] is not None and workers < options["min_workers"]:
            problems.append(f"{workers} worker(s) online, fewer than {options['min_workers']}")
        where = f" ({', '.join(names)})" if names else ""
        if problems:
            self.stderr.write(f"unhealthy{where}: " + "; ".join(problems))
            sys.exit(1)
        self.stdout.write(
            f"ok{where}: {backlog} waiting, oldest {age(oldest)}, {workers} worker(s) online"
        )
