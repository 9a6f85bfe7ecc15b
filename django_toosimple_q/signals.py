"""The lifecycle of tasks and workers, as Django signals.

Connect with ``@receiver(task_finished)``. Every signal is sent with
``sender=TaskExec`` (task signals) or ``sender=WorkerStatus`` (worker
signals) and these keyword arguments:

- ``task_queued``: ``execution``, the TaskExec stored (sent once the
  queueing transaction commits).
- ``task_started``: ``execution``, the claimed execution (its ``id``,
  ``task_name``, ``args``, ``kwargs``, ``queue``, ``attempt``...), and
  ``worker_id``.
- ``task_finished``: the same, and ``outcome``, a dict of what was stored:
  ``state``, ``result`` or ``error``, ``stdout``, ``stderr``, ``finished``.
- ``task_retried``: ``execution`` as above, and ``retry``, the TaskExec
  queued to run it again.
- ``worker_started`` and ``worker_stopped``: ``status``, the worker's
  WorkerStatus (``exit_code`` set on stop).

Receivers of task signals run in a thread of the worker: task_started in
the task's own, task_finished in the one that stored the outcome (under
group commit, maybe another task's), or on SQLite, where the worker's loop
stores outcomes with its claims, in a thread that the loop hands them to,
so that a slow receiver does not hold up its next claim. A receiver that
raises is logged (by Django, on the ``django.dispatch`` logger, with its
traceback) and changes nothing else: not the task's outcome, not the other
receivers.
"""

from django.dispatch import Signal

task_queued = Signal()
task_started = Signal()
task_finished = Signal()
task_retried = Signal()
worker_started = Signal()
worker_stopped = Signal()


def send(signal, sender, **kwargs):
    """Send ``signal`` to its receivers; Django logs those that raise."""
    # Checked first: with no receiver, sending costs one attribute lookup.
    if signal.receivers:
        signal.send_robust(sender, **kwargs)
