import math

from django.core.management.base import BaseCommand

from ... import stats
from ...models import TaskExec

LONGEST = stats.RECENT_WINDOWS[-1]
# The live states count the rows in them now; the finished ones those that ended within the longest window.
COLUMNS = (
    "queue", *stats.LIVE_STATES, "oldest waiting", *(f"{state} {LONGEST}m" for state in TaskExec.FINISHED_STATES),
    *(f"{label} {window}m" for window in stats.RECENT_WINDOWS[:-1] for label in ("done", "failed")),
    "workers", "p50", "p95",
)


class Command(BaseCommand):
    help = (
        "Print where each queue stands: tasks waiting and running, oldest waiting, outcomes of the last "
        f"{LONGEST} minutes, workers, run times."
    )

    def add_arguments(self, parser):
        parser.add_argument("--queue", action="append", help="only this queue (repeatable)")

    def handle(self, *args, **options):
        names = options["queue"] or ()
        snapshot = stats.collect(queues=names)
        queues = snapshot.queues_named(names)
        rows = [[str(cell) for cell in _row(queue)] for queue in queues]
        widths = [max(len(text) for text in column) for column in zip(COLUMNS, *rows)]
        for line in [COLUMNS, ["-" * width for width in widths], *rows]:
            self.stdout.write("  ".join(text.rjust(width) for text, width in zip(line, widths)).rstrip())
        self.stdout.write(f"{snapshot.workers_online} worker(s) online")


def _row(queue):
    return (
        queue.name,
        *queue.counts.values(),
        age(queue.oldest_waiting_age),
        *queue.ended_recently[LONGEST].values(),
        *(
            count
            for window in stats.RECENT_WINDOWS[:-1]
            for count in (queue.finished_recently[window], queue.failed_recently[window])
        ),
        queue.workers_online,
        seconds(queue.run_time_p50),
        seconds(queue.run_time_p95),
    )


def age(delta):
    """A timedelta as "3d4h", "12m5s", "0s"; "-" for None."""
    if delta is None:
        return "-"
    total = int(delta.total_seconds())
    parts = [(total // 86400, "d"), (total // 3600 % 24, "h"), (total // 60 % 60, "m"), (total % 60, "s")]
    shown = [f"{value}{unit}" for value, unit in parts if value]
    return "".join(shown[:2]) or "0s"


def seconds(bound):
    """A run time bucket's bound: "<=0.25s", ">3600s"; "-" for None."""
    if bound is None:
        return "-"
    if math.isinf(bound):
        return f">{stats.RUN_TIME_BUCKETS[-2]:g}s"
    return f"<={bound:g}s"
