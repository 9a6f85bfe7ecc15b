import math

from django.core.management.base import BaseCommand

from ... import stats
from ...models import TaskExec

COLUMNS = (
    "queue", *TaskExec.States.values, "oldest waiting", "done 5m", "failed 5m", "done 60m", "failed 60m",
    "workers", "p50", "p95",
)


class Command(BaseCommand):
    help = "Print where each queue stands: counts by state, oldest waiting, recent outcomes, workers, run times."

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
        *(queue.counts[state] for state in TaskExec.States.values),
        age(queue.oldest_waiting_age),
        queue.finished_recently[5],
        queue.failed_recently[5],
        queue.finished_recently[60],
        queue.failed_recently[60],
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
