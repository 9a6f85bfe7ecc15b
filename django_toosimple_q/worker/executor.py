"""Running one claimed task and writing its outcome: one UPDATE per task.

The finishing UPDATE is fenced on (state PROCESSING, this worker): a worker
that was taken for dead and whose tasks were handed to another cannot
overwrite their outcome.
"""

import datetime
import logging
import time
import traceback

from django.db import DatabaseError, DataError, InterfaceError, connections, transaction
from django.utils import timezone

from .. import serialization
from ..models import TaskExec
from ..registry import tasks_registry
from . import claiming
from .backoff import Backoff
from .capture import captured_output

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States
PREVIEW_LENGTH = TaskExec._meta.get_field("result_preview").max_length


def execute(claimed, worker_id, give_up=lambda: True):
    """Run ``claimed`` (a ClaimedTask) in this thread and store how it ended.

    When the database is away, storing the outcome is tried again until it
    is back or ``give_up()`` is true.
    """
    task = tasks_registry.get(claimed.task_name)
    if task is None:
        message = f"Task {claimed.task_name!r} is not registered: it was renamed or removed from the code"
        logger.error("%s (execution #%s)", message, claimed.id)
        outcome = {"state": States.INVALID, "error": message}
    else:
        logger.debug("running %s #%s", claimed.task_name, claimed.id)
        with captured_output() as output:
            outcome = _call(task, claimed)
        outcome["stdout"], outcome["stderr"] = output.stdout, output.stderr
        # Before the outcome is written: a connection the task left in a
        # transaction would take the outcome into it, and roll it back.
        recycle_connections()
    outcome["finished"] = timezone.now()
    store = _finish_and_retry if outcome["state"] == States.FAILED and claimed.retries != 0 else _finish
    _store(store, claimed, worker_id, give_up, outcome)


def _call(task, claimed):
    """Run the task's function; its outcome: the state, and the result or the error."""
    try:
        value = task.func(*claimed.args, **claimed.kwargs)
    except BaseException:  # noqa: B036 - SystemExit and KeyboardInterrupt fail the task, not the worker
        return {"state": States.FAILED, "error": traceback.format_exc()}
    return _stored_result(value)


def _store(store, claimed, worker_id, give_up, outcome):
    """``store(claimed, worker_id, outcome)``, through database outages.

    An outcome the database refuses (PostgreSQL holds no NUL character) is
    replaced by a failure that says why: storing it again would not help.
    """
    backoff = Backoff()
    refused = False
    while True:
        try:
            return store(claimed, worker_id, outcome)
        except DataError as error:
            if refused:
                raise
            refused = True
            logger.error("the database refused the outcome of %s #%s (%s)", claimed.task_name, claimed.id, error)
            outcome = {
                "state": States.FAILED,
                "error": f"The outcome of the task could not be stored: {error}",
                "finished": outcome["finished"],
            }
        except (DatabaseError, InterfaceError) as error:
            if give_up():
                raise
            logger.warning("could not store the outcome of %s #%s (%s); retrying", claimed.task_name, claimed.id, error)
            # A broken connection is only replaced once closed.
            connections.close_all()
            time.sleep(backoff.next_delay())


def _stored_result(value):
    try:
        serialization.encode(value, "the return value")
    except serialization.NotSerializable as error:
        return {"state": States.FAILED, "error": f"The task succeeded but {error}"}
    return {
        "state": States.SUCCEEDED,
        "result": value,
        "result_preview": _preview(value),
    }


def _preview(value):
    """``str(value)``, cut to fit: what upstream showed, and what reads best in the admin."""
    try:
        text = str(value)
    except Exception:  # a broken __str__ must not lose the result
        text = f"<{type(value).__name__}>"
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "…"


def _finish(claimed, worker_id, outcome):
    finished = claiming.finish(claimed.id, worker_id, outcome)
    if not finished:
        logger.warning("%s #%s was taken from this worker before it finished", claimed.task_name, claimed.id)
    return finished


def _finish_and_retry(claimed, worker_id, outcome):
    """Store the failure and queue the next try, in one transaction."""
    delay = claimed.retry_delay
    now = timezone.now()
    with transaction.atomic():
        # None (no retry) when a unique task's same call already waits.
        retry = TaskExec.objects.requeue(
            claimed,
            state=States.SLEEPING if delay else States.QUEUED,
            due=now + datetime.timedelta(seconds=delay),
            retries=claimed.retries - 1 if claimed.retries > 0 else -1,
            retry_delay=delay * 2,
        )
        if not _finish(claimed, worker_id, {**outcome, "replaced_by_id": retry.pk if retry else None}):
            transaction.set_rollback(True)


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
        if connection.settings_dict["CONN_MAX_AGE"] == 0:
            connection.close_at = None
        connection.close_if_unusable_or_obsolete()
