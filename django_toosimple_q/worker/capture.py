"""Per-thread capture of what tasks write to stdout and stderr.

``contextlib.redirect_stdout`` swaps a process-wide object, so two tasks
running at once on two threads would write into each other's output. Instead
sys.stdout and sys.stderr are replaced, once, by streams that write into the
current thread's capture buffer when it has one, and to the real stream
otherwise.
"""

import io
import logging
import sys
import threading

_buffers = threading.local()
_install_lock = threading.Lock()


class ThreadRoutedStream:
    """Writes to the calling thread's buffer for ``name``, else to ``original``."""

    def __init__(self, name, original):
        self.name = name
        self.original = original

    def _target(self):
        buffer = getattr(_buffers, self.name, None)
        return self.original if buffer is None else buffer

    def write(self, text):
        return self._target().write(text)

    def writelines(self, lines):
        return self._target().writelines(lines)

    def flush(self):
        return self._target().flush()

    def __getattr__(self, attribute):
        # encoding, isatty, fileno...: whatever else is asked of the real stream.
        return getattr(self.original, attribute)


def install():
    """Route sys.stdout and sys.stderr through this module (idempotent).

    Logging handlers made before this call hold the real stream: they are
    pointed at the routed one so a task's log lines land in its own output.
    The routed streams stay installed: outside a capture they are the real
    streams, and taking them out could undo another library's replacement.
    """
    if isinstance(sys.stdout, ThreadRoutedStream) and isinstance(sys.stderr, ThreadRoutedStream):
        return  # the common case, once per task: no lock
    with _install_lock:
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if isinstance(current, ThreadRoutedStream):
                continue
            routed = ThreadRoutedStream(name, current)
            setattr(sys, name, routed)
            for handler in _stream_handlers():
                if handler.stream is current:
                    handler.setStream(routed)


def _stream_handlers():
    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                yield handler


class captured_output:
    """Capture this thread's stdout and stderr while in this block: ``with captured_output() as output:``.

    A class rather than a generator: it runs once per task.
    """

    def __init__(self):
        self._stdout = io.StringIO()
        self._stderr = io.StringIO()

    def __enter__(self):
        install()
        _buffers.stdout, _buffers.stderr = self._stdout, self._stderr
        return self

    def __exit__(self, *exc_info):
        _buffers.stdout = _buffers.stderr = None

    @property
    def stdout(self):
        return self._stdout.getvalue()

    @property
    def stderr(self):
        return self._stderr.getvalue()
