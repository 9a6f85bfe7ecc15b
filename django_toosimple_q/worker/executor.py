"""Running one claimed task and writing its outcome.

The outcomes of a worker's threads are written together when they end close
together (see group_commit.py and ``store_and_claim``), else one UPDATE per
task. Each row is fenced on (state PROCESSING, this worker): a worker that
was taken for dead and whose tasks were handed to another cannot overwrite
their outcome.
"""

import contextlib
import datetime
import functools
import logging
import time
import traceback
from typing import NamedTuple

from django.db import DatabaseError, InterfaceError, connections, transaction
from django.utils import timezone

from .. import conf, serialization, signals, store
from ..models import TaskExec, queue_database
from ..registry import tasks_registry
from . import coroutines, errors
from .backoff import Backoff
from .capture import captured_output
from .group_commit import GroupCommit
from .timeouts import TaskTimeout

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States
PREVIEW_LENGTH = TaskExec._meta.get_field("result_preview").max_length


def execute(claimed, worker_id, give_up=lambda: True, watch=None, together=None, ended=None):
    """Run ``claimed`` (a ClaimedTask) in this thread and store how it ended.

    When the database is away, storing the outcome is tried again until it
    is back or ``give_up()`` is true. ``watch`` (a timeouts.Watch) ends the
    task at its timeout; once it abandoned this thread, the outcome is
    stored from another one (``store_timed_out``) and this one stores nothing.
    ``together``: the worker's GroupCommit, which this thread hands the
    outcome over to (for ``store_and_claim``), or None to store it at once.
    ``ended(state, seconds)``, if given, is called once the outcome is
    stored (by the thread that stores it) with the state stored and the run
    time; not when the row was taken from this worker meanwhile.
    """
    started = time.monotonic()
    on_stored = None
    try:
        run, on_stored = _runner(claimed, worker_id)
    except LookupError as error:
        logger.error("%s (execution #%s)", error, claimed.id, extra=log_extra(claimed, worker_id))
        outcome = {"state": States.INVALID, "error": str(error)}
    else:
        if logger.isEnabledFor(logging.DEBUG):
            extra = log_extra(claimed, worker_id)
            logger.debug("running %s #%s (attempt %s)", claimed.task_name, claimed.id, claimed.attempt, extra=extra)
        signals.send(signals.task_started, TaskExec, execution=claimed, worker_id=worker_id)
        with captured_output() as output, savepoint_in_callers_transaction():
            outcome = _run_watched(run, watch)
        if watch is not None and watch.abandoned:
            # Its outcome is stored already, and the worker no longer counts this thread.
            connections.close_all()
            return
        outcome["stdout"], outcome["stderr"] = output.stdout, output.stderr
        # Before the outcome is written: a connection the task left in a
        # transaction would take the outcome into it, and roll it back.
        recycle_connections()
    outcome["finished"] = timezone.now()
    duration = time.monotonic() - started
    _store(Ending(claimed, worker_id, outcome, give_up, functools.partial(_stored, on_stored, ended, duration)), together)


def _stored(on_stored, ended, duration, ending):
    """What follows the storing of ``ending``'s outcome: ``on_stored`` (a django.tasks run's), ``ended``, the log line."""
    claimed, worker_id, outcome = ending.claimed, ending.worker_id, ending.outcome
    if on_stored is not None:
        on_stored(outcome)
    if ended is not None:
        ended(outcome["state"], duration)
    # DEBUG, as the line before the run: one line per task would slow a busy worker.
    if logger.isEnabledFor(logging.DEBUG):
        extra = log_extra(claimed, worker_id, duration)
        logger.debug("%s #%s %s in %.3fs", claimed.task_name, claimed.id, outcome["state"], duration, extra=extra)


class Ending(NamedTuple):
    """An outcome to store, and what to do once it is stored: ``then(ending)``."""

    claimed: object
    worker_id: int
    outcome: dict
    give_up: object  # give_up(): whether to stop retrying through an outage
    then: object


def log_extra(execution, worker_id, duration=None):
    """The ``extra`` of a lifecycle log line: the same keys on each, for JSON log formatters to index.

    ``execution`` is a TaskExec or a claimed task; ``duration`` in seconds, on the lines that end a run.
    """
    return {
        "execution_id": execution.id,
        "task_name": execution.task_name,
        "queue": execution.queue,
        "attempt": execution.attempt,
        "duration": duration,
        "worker": worker_id,
    }


def store_timed_out(claimed, worker_id, seconds, give_up=lambda: True, together=None, ended=None):
    """Store that ``claimed`` timed out, its thread abandoned: what that thread will not store.

    ``together`` and ``ended`` as for ``execute``.
    """
    outcome = _timed_out(seconds, ": its thread was stuck and is abandoned")
    outcome["finished"] = timezone.now()
    _store(Ending(claimed, worker_id, outcome, give_up, functools.partial(_stored, None, ended, seconds)), together)


def group_commit():
    """What a worker's threads hand their outcomes over to: a GroupCommit, or None (TOOSIMPLEQ_FINISH_BATCH = 1)."""
    most = conf.FINISH_BATCH
    if most == 1:
        return None
    return GroupCommit(most, write=None if store.one_writer() else _store_together)


def _store_together(endings):
    """Store the outcomes of ``endings`` in one transaction, from a thread of the pool (see ``store_and_claim``).

    While the database is away, each is stored alone, through the outage.
    """
    try:
        _, say = store_and_claim(endings, None, 0, None)
    except Exception:
        _store_each_alone(endings)
        return
    say()


def store_and_claim(endings, worker_id, limit, queue_filter):
    """Store the outcomes of ``endings`` and claim up to ``limit`` tasks, in one transaction.

    Returns the tasks claimed, and ``say()``, which sends task_finished (and
    does what follows) for each outcome stored: the caller calls it once
    the claimed tasks are on their way, so that they need not wait for it.
    An outage is raised, the outcomes left to the caller to write again.
    When the database refuses the transaction for anything else (a value
    it cannot take), each outcome is stored alone, then the claim is made.
    """
    triples = [(ending.claimed.id, ending.worker_id, ending.outcome) for ending in endings]
    try:
        stored, claimed = store.finish_and_claim(triples, worker_id, limit, queue_filter)
    except Exception as error:
        if not endings or _is_outage(error):
            raise
        logger.debug("%s outcomes could not be written together (%s): each is written alone", len(endings), error)
        _store_each_alone(endings)
        return store.claim(worker_id, limit, queue_filter), _nothing_to_say
    return claimed, functools.partial(_say_all, endings, stored)


def calls_receivers(endings):
    """Whether what follows storing ``endings`` calls the project's receivers (of task_finished, or Django's)."""
    return bool(signals.task_finished.receivers) or any(ending.claimed.backend for ending in endings)


def _say_all(endings, stored):
    for ending in endings:
        _said(ending, ending.claimed.id in stored)


def _nothing_to_say():
    pass  # each outcome stored alone was said as it was stored


def _store_each_alone(endings):
    for ending in endings:
        try:
            _store_alone(ending)
        except Exception:
            logger.exception("could not store the outcome of %s #%s", ending.claimed.task_name, ending.claimed.id)


def _run_watched(run, watch):
    """``run()``, ended by TaskTimeout at ``watch``'s deadline (an async task too: it runs on this thread)."""
    if watch is None:
        return run()
    try:
        with watch:
            return run()
    except TaskTimeout:
        return _timed_out(watch.seconds, f"\n{traceback.format_exc()}")


def _timed_out(seconds, detail):
    """The outcome of a run ended at its timeout; its error class for a django.tasks result."""
    error = f"timed out after {seconds:g} s{detail}"
    return {"state": States.FAILED, "error": error, "error_class": TIMEOUT_CLASS}


TIMEOUT_CLASS = f"{TaskTimeout.__module__}.{TaskTimeout.__qualname__}"


def _runner(claimed, worker_id):
    """A function that runs ``claimed`` and returns its outcome, and one to call with the outcome once
    it is stored (or None); LookupError when its task is not in the code."""
    if claimed.backend:
        # Queued through Django's task framework, which is imported only
        # where it is installed: run as Django runs its tasks.
        try:
            from . import framework
        except ImportError as error:
            raise LookupError(f"Task {claimed.task_name!r} was queued through django.tasks: {error}") from error
        run = framework.runner(claimed, worker_id)
        return run, run.stored
    task = tasks_registry.get(claimed.task_name)
    if task is None:
        raise LookupError(f"Task {claimed.task_name!r} is not registered: it was renamed or removed from the code")
    return functools.partial(_call, task, claimed), None


def _call(task, claimed):
    """Run the task's function; its outcome: the state, and the result or the error."""
    try:
        value = coroutines.call(task.func, claimed.args, claimed.kwargs)
    except TaskTimeout:
        raise  # the timeout's, not the task's: see _run_watched
    except BaseException:  # noqa: B036 - SystemExit and KeyboardInterrupt fail the task, not the worker
        return {"state": States.FAILED, "error": traceback.format_exc()}
    return _succeeded(value, claimed)


def _succeeded(value, claimed):
    """The outcome of a run that returned ``value``: SUCCEEDED, with the value if it can be stored.

    A value that cannot be stored does not undo the run: its side effects
    happened, so it is not run again; the row keeps the value's preview and
    says why the value itself is missing.
    """
    outcome = {"state": States.SUCCEEDED, "result": value, "result_preview": preview(value)}
    try:
        serialization.encode(value, "the return value")  # as the result field will, naming the value
    except serialization.NotSerializable as error:
        outcome["result"] = None
        outcome["error"] = f"The task succeeded, but its result was not kept: {error}"
        logger.warning("%s #%s: %s", claimed.task_name, claimed.id, outcome["error"])
    return outcome


def preview(value):
    """``str(value)``, cut to fit: what upstream showed, and what reads best in the admin."""
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not lose the result
        text = f"<{type(value).__name__}>"
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "…"


def _store(ending, together=None):
    """Store ``ending``'s outcome, and queue the next try of a failure that has retries left.

    Handed over to ``together`` when given, to be written with the outcomes
    of other threads; else at once, in this thread. A retry is queued in
    its failure's transaction, and undone with it when the fence refuses
    the failure: it is stored alone.
    """
    claimed, outcome = ending.claimed, ending.outcome
    retries = outcome.get("retries", claimed.retries)  # an outcome may rule out any retry
    retrying = outcome["state"] == States.FAILED and retries != 0
    if together is not None and not retrying:
        together.hand_over(ending)
    else:
        _store_alone(ending, _finish_and_retry if retrying else _finish)


def _store_alone(ending, write=None):
    """Store ``ending``'s outcome with ``write`` (by default ``_finish``), through outages.

    Anything but an outage that goes wrong (the database refuses a value,
    the next try's due time overflows) would go wrong again: the row ends
    with the reason instead, never left PROCESSING for another worker to
    run again.
    """
    try:
        stored = _store_through_outages(write or _finish, ending)
    except Exception as error:
        if _is_outage(error):
            raise  # given up: the worker stops, and its row is interrupted
        instead = _unstorable(ending.claimed, ending.worker_id, ending.outcome, error)
        ending = ending._replace(outcome=instead)
        stored = _store_through_outages(_finish, ending)
    _said(ending, stored)


def _store_through_outages(write, ending):
    """``write(claimed, worker_id, outcome)``, tried again while the database is away, until ``give_up()``."""
    claimed, worker_id = ending.claimed, ending.worker_id
    backoff = Backoff()
    while True:
        try:
            with savepoint_in_callers_transaction():
                return write(claimed, worker_id, ending.outcome)
        except (DatabaseError, InterfaceError) as error:
            if not errors.is_transient(error) or ending.give_up():
                raise
            logger.warning(
                "could not store the outcome of %s #%s (%s); retrying",
                claimed.task_name,
                claimed.id,
                error,
                extra=log_extra(claimed, worker_id),
            )
            # A broken connection is only replaced once closed.
            connections.close_all()
            time.sleep(backoff.next_delay())


def _said(ending, stored):
    """Once ``ending``'s outcome was written: task_finished and what follows when stored, a warning when the row was taken."""
    claimed, worker_id = ending.claimed, ending.worker_id
    if stored:
        signals.send(signals.task_finished, TaskExec, execution=claimed, worker_id=worker_id, outcome=ending.outcome)
        try:
            ending.then(ending)
        except Exception:  # the outcome is stored: the thread that stored it goes on, with the others'
            logger.exception("%s #%s: what follows its stored outcome raised", claimed.task_name, claimed.id)
    else:
        logger.warning(
            "%s #%s was taken from this worker before it finished",
            claimed.task_name,
            claimed.id,
            extra=log_extra(claimed, worker_id),
        )


def _is_outage(error):
    return isinstance(error, (DatabaseError, InterfaceError)) and errors.is_transient(error)


def _unstorable(claimed, worker_id, outcome, error):
    """What is stored instead of an ``outcome`` that could not be: its state, and why the rest is missing.

    A success stays one; anything else ends FAILED, and is not tried again.
    """
    reason = f"The outcome of the task could not be stored: {type(error).__name__}: {error}"
    logger.error("%s #%s: %s", claimed.task_name, claimed.id, reason, extra=log_extra(claimed, worker_id))
    # What the task's own error said, less what the database may have refused in it.
    original = outcome.get("error", "").replace("\x00", "\ufffd")
    return {
        "state": States.SUCCEEDED if outcome["state"] == States.SUCCEEDED else States.FAILED,
        "error": f"{reason}\n\n{original}".strip(),
        "finished": outcome["finished"],
    }


def _finish(claimed, worker_id, outcome):
    return store.finish(claimed.id, worker_id, outcome)


def _finish_and_retry(claimed, worker_id, outcome):
    """Store the failure and queue the next try, in one transaction.

    The delay doubles at each try, up to TOOSIMPLEQ_MAX_RETRY_DELAY.
    """
    longest = conf.MAX_RETRY_DELAY
    delay = min(claimed.retry_delay, longest)
    due = timezone.now() + datetime.timedelta(seconds=delay)
    with transaction.atomic(using=queue_database()):
        # None (no retry) when a unique task's same call already waits.
        retry = store.requeue(
            claimed,
            state=States.SLEEPING if delay else States.QUEUED,
            due=due,
            retries=claimed.retries - 1 if claimed.retries > 0 else -1,
            retry_delay=min(delay * 2, longest),
        )
        finished = _finish(claimed, worker_id, {**outcome, "replaced_by_id": retry.pk if retry else None})
        if not finished:
            transaction.set_rollback(True)
    if finished and retry:
        extra = log_extra(claimed, worker_id)
        logger.info("%s #%s failed: queued again as #%s", claimed.task_name, claimed.id, retry.pk, extra=extra)
        signals.send(signals.task_retried, TaskExec, execution=claimed, worker_id=worker_id, retry=retry)
    return finished


@contextlib.contextmanager
def savepoint_in_callers_transaction():
    """Within the caller's transaction (see Worker), what an error in this block does to it.

    Outside, each statement commits by itself and a failed one undoes only
    itself. Inside, the same: the writes before an error are kept, unless
    the error aborted the transaction (PostgreSQL, after a failed
    statement), when they are undone back to this block's start so that
    the caller's transaction goes on.
    """
    database = connections[queue_database()]
    if not database.in_atomic_block:
        yield
        return
    savepoint = transaction.savepoint(using=database.alias)
    try:
        yield
    finally:
        try:
            transaction.savepoint_commit(savepoint, using=database.alias)
        except DatabaseError:  # the transaction was aborted: only a rollback is allowed
            transaction.set_rollback(False, using=database.alias)  # lets the rollback through, as atomic() does
            transaction.savepoint_rollback(savepoint, using=database.alias)


def recycle_connections():
    """Keep this thread's connections for its next task, unless the task left them unfit.

    As at the end of a request, Django's own rules close a broken one, one
    left outside autocommit (what the task did not commit is undone), and
    one older than a CONN_MAX_AGE given in seconds. The others are kept: a
    worker thread runs task after task, and reconnecting each time would
    cost more than most tasks. The pool bounds the connections to one per
    thread, so keeping them leaks nothing.
    """
    for connection in connections.all(initialized_only=True):
        if connection.in_atomic_block:
            continue  # the caller's transaction (a TestCase): its own, to keep
        if connection.settings_dict["CONN_MAX_AGE"] == 0:
            connection.close_at = None
        connection.close_if_unusable_or_obsolete()
