"""Per-thread capture of what tasks write to stdout and stderr.

``contextlib.redirect_stdout`` swaps a process-wide object, so two tasks
running at once on two threads would write into each other's output. Instead
sys.stdout and sys.stderr are replaced, once, by streams that write into the
current thread's capture buffer when it has one, and to the real stream
otherwise.
"""

import collections
import io
import logging
import sys
import threading

from .. import conf

_current = threading.local()  # .capture: the captured_output of this thread, if any
_install_lock = threading.Lock()


class ThreadRoutedStream:
    """Writes to the calling thread's capture buffer for ``name``, else to ``original``."""

    def __init__(self, name, original):
        self.name = name
        self.original = original

    def _target(self):
        capture = getattr(_current, "capture", None)
        return self.original if capture is None else capture.buffer(self.name)

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

    It runs once per task, and most tasks print nothing: a class rather
    than a generator, and buffers made on the first write.
    """

    def __init__(self):
        self._buffers = {}

    def __enter__(self):
        install()
        _current.capture = self
        return self

    def __exit__(self, *exc_info):
        _current.capture = None

    def buffer(self, name):
        """The buffer of the stream ``name`` ("stdout" or "stderr")."""
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = HeadAndTail(conf.MAX_OUTPUT)
        return buffer

    @property
    def stdout(self):
        return self._text("stdout")

    @property
    def stderr(self):
        return self._text("stderr")

    def _text(self, name):
        buffer = self._buffers.get(name)
        return "" if buffer is None else buffer.getvalue()


class HeadAndTail:
    """A text stream that keeps the first and the last ``limit // 2`` characters written.

    A task may print without end: what is kept stays bounded, and the
    middle that was cut is counted. NUL characters, which PostgreSQL
    cannot store in text, are kept as U+FFFD.
    """

    def __init__(self, limit):
        self.tail_limit = limit // 2
        self.head_room = limit - self.tail_limit
        self.head = io.StringIO()
        self.tail = collections.deque()
        self.tail_size = 0
        self.written = 0

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        length = len(text)
        self.written += length
        if self.head_room:
            kept = text[: self.head_room]
            self.head.write(kept)
            self.head_room -= len(kept)
            text = text[len(kept) :]
        if text and self.tail_limit:
            self.tail.append(text)
            self.tail_size += len(text)
            # Chunks wholly before the last tail_limit characters go.
            while self.tail_size - len(self.tail[0]) >= self.tail_limit:
                self.tail_size -= len(self.tail.popleft())
        return length

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def getvalue(self):
        head = self.head.getvalue()
        tail = "".join(self.tail)[-self.tail_limit :] if self.tail_limit else ""
        cut = self.written - len(head) - len(tail)
        text = head + tail if not cut else f"{head}\n[... {cut} characters cut ...]\n{tail}"
        return text.replace("\x00", "\ufffd")
