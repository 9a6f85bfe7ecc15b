"""Giving interrupted tasks another run: the tasks of dead workers, and
those still running when a stopping worker's grace period ends.

A call interrupted TOOSIMPLEQ_MAX_INTERRUPTIONS times ends FAILED instead:
a task that kills its worker (os._exit, out of memory, a crash in C code)
would otherwise take down every worker in turn, forever.

Each row is interrupted with a conditional UPDATE in the transaction that
queues its replacement: when two workers reap the same row at once, the
second one's UPDATE matches nothing and its replacement is rolled back.
"""

import logging

from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.db.models.lookups import LessThan
from django.utils import timezone

from .. import conf, store
from ..models import TaskExec, queue_database
from .executor import log_extra

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States


def interrupt(executions, reason):
    """Mark each PROCESSING row of ``executions`` INTERRUPTED and queue it again.

    Returns the replacements queued: none for a unique task whose same call
    already waits, since that one stands for it, and none for a call
    interrupted too often, which ends FAILED.
    """
    replacements = []
    for execution in executions.filter(state=States.PROCESSING):
        interruptions = interruptions_before(execution) + 1
        limit = conf.MAX_INTERRUPTIONS
        with transaction.atomic(using=queue_database()):
            if interruptions >= limit:
                replacement = None
                ending = {
                    "state": States.FAILED,
                    "error": f"Interrupted {interruptions} times ({reason}): not run again, "
                    f"TOOSIMPLEQ_MAX_INTERRUPTIONS is {limit}",
                }
            else:
                replacement = store.requeue(execution)
                ending = {"state": States.INTERRUPTED, "error": reason, "replaced_by": replacement}
            ended = TaskExec.objects.filter(
                pk=execution.pk, state=States.PROCESSING, worker_id=execution.worker_id
            ).update(finished=timezone.now(), **ending)
            if not ended:
                transaction.set_rollback(True)
                continue
        extra = log_extra(execution, execution.worker_id)
        if interruptions >= limit:
            logger.error("%s #%s: %s", execution.task_name, execution.pk, ending["error"], extra=extra)
            continue
        if replacement is None:
            logger.warning(
                "%s #%s interrupted (%s): the same call already waits",
                execution.task_name,
                execution.pk,
                reason,
                extra=extra,
            )
            continue
        logger.warning(
            "%s #%s interrupted (%s): queued again as #%s",
            execution.task_name,
            execution.pk,
            reason,
            replacement.pk,
            extra=extra,
        )
        replacements.append(replacement)
    return replacements


def interruptions_before(execution):
    """How many earlier runs of ``execution``'s call were interrupted.

    Walks the chain of replacements back to the first run, a query per run:
    it happens only when a task is interrupted.
    """
    count = 0
    earlier = TaskExec.objects.filter(replaced_by=execution.pk).values_list("pk", "state").first()
    while earlier is not None:
        pk, state = earlier
        count += state == States.INTERRUPTED
        earlier = TaskExec.objects.filter(replaced_by=pk).values_list("pk", "state").first()
    return count


def reap_dead_workers(database_back=None):
    """Interrupt and queue again the tasks of workers silent for longer than their timeout.

    ``database_back``: when the reaper last saw the database come back
    after an outage. No worker could beat during it, so silence before that
    proves nothing: a worker is taken for dead only once it has had its full
    timeout to beat again since.
    """
    silent_since = ExpressionWrapper(Value(timezone.now()) - F("worker__timeout"), output_field=DateTimeField())
    silent = Q(worker__last_tick__lt=silent_since)
    if database_back is not None:
        silent &= Q(LessThan(Value(database_back, output_field=DateTimeField()), silent_since))
    orphans = TaskExec.objects.filter(
        Q(worker__isnull=True) | silent | Q(worker__stopped__isnull=False),
        state=States.PROCESSING,
    )
    return interrupt(orphans, reason="its worker stopped responding")
