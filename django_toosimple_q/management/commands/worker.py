import logging
import signal
import threading

from django.core.management.base import BaseCommand, CommandError

from ...worker import Worker, exit_leaving_task_threads

LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO}

logger = logging.getLogger("django_toosimple_q")


class Command(BaseCommand):
    help = "Run queued tasks and the schedules, until stopped (Ctrl-C or SIGTERM)."

    def add_arguments(self, parser):
        parser.add_argument("--threads", type=int, default=1, help="tasks run at once (default: 1)")
        parser.add_argument("--queue", action="append", default=[], help="serve only this queue (repeatable)")
        parser.add_argument(
            "--exclude_queue", action="append", default=[], help="serve every queue but this one (repeatable)"
        )
        parser.add_argument("--tick", type=float, default=1.0, help="seconds between two polls when idle (default: 1)")
        parser.add_argument("--once", action="store_true", help="run one task if one is waiting, then exit")
        parser.add_argument("--until_done", action="store_true", help="exit when nothing is waiting or running")
        parser.add_argument("--max_tasks", type=int, default=None, help="exit after this many tasks")
        parser.add_argument("--no_schedules", action="store_true", help="do not run the schedules")
        parser.add_argument(
            "--label", default=None, help='this worker\'s name, "{pid}" its process id (default: "<hostname>-<pid>")'
        )
        parser.add_argument(
            "--timeout",
            type=float,
            default=None,
            help="seconds without a heartbeat before other workers take this one for dead (default: 60)",
        )
        parser.add_argument(
            "--grace", type=float, default=None, help="seconds running tasks get to finish on stop (default: 30)"
        )

    def handle(self, *args, **options):
        self._configure_logging(options["verbosity"])
        try:
            worker = Worker(
                threads=options["threads"],
                queues=options["queue"],
                excluded_queues=options["exclude_queue"],
                tick=options["tick"],
                label=options["label"],
                once=options["once"],
                until_done=options["until_done"],
                max_tasks=options["max_tasks"],
                schedules=not options["no_schedules"],
                grace=options["grace"],
                timeout=options["timeout"],
            )
        except ValueError as error:
            raise CommandError(error) from error
        self._stop_on_signals(worker)
        exit_code = worker.run()
        if exit_code or worker.abandoned_threads:
            # After 77 (the grace period ended), 78 or 99 (the loop crashed),
            # or with threads abandoned past a timeout, tasks may still run
            # on threads a normal exit would wait for.
            exit_leaving_task_threads(exit_code)

    def _stop_on_signals(self, worker):
        """The first SIGTERM or Ctrl-C stops gracefully; a second one skips the grace."""
        stops_asked = 0

        def ask_to_stop(signum, frame):
            nonlocal stops_asked
            stops_asked += 1
            # Not stop() here: a handler runs in the main thread, the loop's,
            # maybe while it holds the lock of an Event that stop() sets.
            grace = 0 if stops_asked > 1 else None
            threading.Thread(target=stop, args=(grace,), name="toosimpleq-stop", daemon=True).start()

        def stop(grace):
            if grace == 0:
                logger.warning("stopping at once: tasks still running are interrupted")
            else:
                logger.info("stopping: running tasks get %ss to finish; a second signal stops at once", worker.grace)
            worker.stop(grace=grace)

        for name in ("SIGINT", "SIGTERM", "SIGBREAK"):  # SIGBREAK: Ctrl-Break on Windows
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), ask_to_stop)

    def _configure_logging(self, verbosity):
        """Show the worker's log lines, unless the project's LOGGING already routes them."""
        logger = logging.getLogger("django_toosimple_q")
        if logger.handlers:
            return
        handler = logging.StreamHandler(self.stderr._out)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(LOG_LEVELS.get(verbosity, logging.DEBUG))

