"""Giving interrupted tasks another run: the tasks of dead workers, and
those still running when a stopping worker's grace period ends.

Each row is interrupted with a conditional UPDATE in the transaction that
queues its replacement: when two workers reap the same row at once, the
second one's UPDATE matches nothing and its replacement is rolled back.
"""

import logging

from django.db import transaction
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, Value
from django.utils import timezone

from ..models import TaskExec

logger = logging.getLogger("django_toosimple_q")

States = TaskExec.States


def interrupt(executions, reason):
    """Mark each PROCESSING row of ``executions`` INTERRUPTED and queue it again.

    Returns the replacements queued: none for a unique task whose same call
    already waits, since that one stands for it.
    """
    replacements = []
    for execution in executions.filter(state=States.PROCESSING):
        with transaction.atomic():
            replacement = TaskExec.objects.requeue(execution)
            interrupted = TaskExec.objects.filter(
                pk=execution.pk, state=States.PROCESSING, worker_id=execution.worker_id
            ).update(state=States.INTERRUPTED, finished=timezone.now(), error=reason, replaced_by=replacement)
            if not interrupted:
                transaction.set_rollback(True)
                continue
        if replacement is None:
            logger.warning(
                "%s #%s interrupted (%s): the same call already waits", execution.task_name, execution.pk, reason
            )
            continue
        logger.warning("%s #%s interrupted (%s): queued again as #%s", execution.task_name, execution.pk, reason, replacement.pk)
        replacements.append(replacement)
    return replacements


def reap_dead_workers():
    """Interrupt and queue again the tasks of workers silent for longer than their timeout."""
    silent = ExpressionWrapper(Value(timezone.now()) - F("worker__timeout"), output_field=DateTimeField())
    orphans = TaskExec.objects.filter(
        Q(worker__isnull=True) | Q(worker__last_tick__lt=silent) | Q(worker__stopped__isnull=False),
        state=States.PROCESSING,
    )
    return interrupt(orphans, reason="its worker stopped responding")
