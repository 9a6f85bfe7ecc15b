from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from ...models import TaskExec, prune_executions, prune_workers
from ...retention import describe, parse_age


class Command(BaseCommand):
    help = (
        "Delete finished executions (each call with all its runs) and stopped workers older than --older-than, "
        "in short transactions."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="an age: 90s, 10m, 12h, 7d, 2w")
        parser.add_argument(
            "--state",
            action="append",
            choices=TaskExec.FINISHED_STATES,
            help="only calls that ended in this state (repeatable; default: any finished state)",
        )
        parser.add_argument("--queue", action="append", help="only executions of this queue (repeatable)")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    def handle(self, *args, **options):
        try:
            before = timezone.now() - parse_age(options["older_than"])
        except ValueError as error:
            raise CommandError(f"--older-than: {error}") from None
        dry_run = options["dry_run"]
        executions = prune_executions(before, states=options["state"], queues=options["queue"], dry_run=dry_run)
        # Workers belong to no queue and end in no state: only a plain prune takes them.
        workers = 0 if options["state"] or options["queue"] else prune_workers(before, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {describe(executions)} and {workers} stopped worker(s)")
