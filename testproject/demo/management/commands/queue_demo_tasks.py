from django.core.management.base import BaseCommand

from ...tasks import flaky, say_hello, take_your_time


class Command(BaseCommand):
    help = "Queue a few tasks of the demo."

    def handle(self, *args, **options):
        for name in ("John", "Jane", "the world"):
            say_hello.queue(name)
        for seconds in (1, 2, 3):
            take_your_time.queue(seconds)
        flaky.queue()
        self.stdout.write("Queued 7 tasks: run a worker to see them done, and the admin to look at them.")
