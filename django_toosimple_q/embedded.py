"""Running the worker inside the web server's process: TOOSIMPLEQ_EMBEDDED = True.

It is the engine of ``manage.py worker``, on TOOSIMPLEQ_EMBEDDED_THREADS
threads, started by Django's start-up in the processes that serve requests:

- ``manage.py runserver``: the process that serves (the autoreloader's
  child, or the only process with ``--noreload``);
- a process that builds Django's WSGI or ASGI application, as gunicorn,
  uvicorn, waitress and every other server do through ``wsgi.py`` or
  ``asgi.py``: one embedded worker per server process.

Never in any other management command (migrate, shell, test, check, the
worker command...). Servers this rule misses call ``start()`` and ``stop()``.
"""

import atexit
import logging
import os
import signal
import sys
import threading

from django.utils.autoreload import DJANGO_AUTORELOAD_ENV

from . import conf
from .models import WorkerStatus, default_label
from .worker import Worker, exit_leaving_task_threads

logger = logging.getLogger("django_toosimple_q")

_worker = None
_lock = threading.Lock()


def start():
    """Start this process's embedded worker, if not started yet; returns it."""
    global _worker
    with _lock:
        if _worker is None:
            _worker = Worker(
                threads=conf.EMBEDDED_THREADS,
                queues=conf.EMBEDDED_QUEUES or (),
                excluded_queues=conf.EMBEDDED_EXCLUDE_QUEUES or (),
                label=f"{default_label()}-embedded",
                stop_with_main_thread=True,
            )
            _worker.start()
            atexit.register(stop)
        return _worker


def stop(grace=None):
    """Stop the embedded worker: running tasks get ``grace`` seconds (TOOSIMPLEQ_GRACE).

    Returns the worker's exit code (None when none was running): 77 when
    tasks outlived the grace period and were queued again.
    """
    global _worker
    with _lock:
        worker, _worker = _worker, None
    if worker is None:
        return None
    worker.stop(grace)
    return worker.join()


def start_if_serving(argv=None):
    """Start the embedded worker when enabled and this process serves requests."""
    if conf.EMBEDDED and is_serving_process(sys.argv if argv is None else argv):
        try:
            start()
        except ValueError as error:
            # A bad setting must not keep the site from serving; the system
            # check toosimpleq.E002 reports it too.
            logger.error("the embedded worker cannot start: %s", error)
            return
        _stop_gracefully_on_sigterm()


def is_serving_process(argv):
    if argv[1:2] == ["runserver"]:
        return "--noreload" in argv or os.environ.get(DJANGO_AUTORELOAD_ENV) == "true"
    return _building_server_application()


def _building_server_application():
    """Whether Django is being set up by get_wsgi_application() or get_asgi_application().

    Servers load the application through these; management commands and
    scripts never do. The call stack is where that shows.
    """
    from django.core import asgi, wsgi

    entry_points = {wsgi.get_wsgi_application.__code__, asgi.get_asgi_application.__code__}
    frame = sys._getframe()
    while frame is not None:
        if frame.f_code in entry_points:
            return True
        frame = frame.f_back
    return False


def _stop_gracefully_on_sigterm():
    """Let running tasks finish when a server that does not handle SIGTERM gets one.

    ``runserver --noreload`` (and waitress...) leave SIGTERM to its default,
    which kills the process on the spot. Servers with their own handler
    (gunicorn, and the autoreloader's, set after this) are left alone: they
    exit through the interpreter's shutdown, which waits for running tasks
    and then stops the worker (atexit).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stop_then_exit(signum, frame):
        logger.info("SIGTERM: stopping the embedded worker")
        if stop() == WorkerStatus.ExitCodes.TERMINATED:
            # The tasks that outlived the grace period are queued again, but
            # their threads still run, and a normal exit would wait for them.
            exit_leaving_task_threads(0)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_then_exit)
