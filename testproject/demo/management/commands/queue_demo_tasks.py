from django.core.management.base import BaseCommand

from ...tasks import queue_demo_tasks


class Command(BaseCommand):
    help = "Queue a few tasks of the demo."

    def handle(self, *args, **options):
        count = len(queue_demo_tasks())
        self.stdout.write(
            f"Queued {count} tasks: `make demo`'s server (embedded mode) or a worker runs them; the admin shows them."
        )
