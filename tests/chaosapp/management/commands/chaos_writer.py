import itertools
import signal
import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from tests.testapp.models import Execution


class Command(BaseCommand):
    help = "Write rows, one small transaction each, until SIGTERM; print how many (chaos scenarios)."

    def handle(self, *args, **options):
        stopping = []
        signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
        written = 0
        for number in itertools.count():
            if stopping:
                break
            with transaction.atomic():
                Execution.objects.create(key=f"writer {number}")
            written += 1
        sys.stdout.write(f"{written}\n")
