"""The public decorators: ``@register_task()`` and ``@schedule(...)``."""

from .registry import NOW, Schedule, Task, register, register_schedule, registered_task


def register_task(name=None, *, queue="default", priority=0, unique=False, retries=0, retry_delay=0, timeout=None):
    """Register the decorated function as a task that can be queued.

    ``retries`` is how many times a failed execution is queued again (-1:
    forever); ``retry_delay`` the seconds before the first retry, doubling
    each time. ``timeout``: seconds after which a run is ended and FAILED
    (default: TOOSIMPLEQ_TASK_TIMEOUT).
    """
    if callable(name):
        raise TypeError("register_task must be called: write @register_task(), not @register_task")

    def decorator(func):
        task = register(
            Task(
                func,
                name=name,
                queue=queue,
                priority=priority,
                unique=unique,
                retries=retries,
                retry_delay=retry_delay,
                timeout=timeout,
            )
        )
        # The function itself comes back, as upstream's did, so that other
        # decorators (functools.wraps copies these too) and code holding the
        # function keep working; the task hangs on it.
        func._task = task
        func.queue = task.queue
        func.queue_many = task.queue_many
        func.using = task.using
        return func

    return decorator


def schedule(
    cron,
    *,
    name=None,
    args=(),
    kwargs=None,
    last_run=NOW,
    catch_up=False,
    queue=None,
    datetime_kwarg=None,
    run_on_creation=False,
):
    """Queue the task below (a ``@register_task()``, or a ``django.tasks`` ``@task``) on a cron.

    The first run is the next occurrence of ``cron`` after the schedule is
    first seen (or after ``last_run``, a datetime); ``last_run=None`` (or
    ``run_on_creation=True``) runs it at once instead. ``catch_up=True`` runs every occurrence missed while no
    worker ran. ``datetime_kwarg`` names a keyword argument that receives
    the occurrence's due time. ``name`` tells apart several schedules of
    one task.
    """
    def decorator(func):
        register_schedule(
            Schedule(
                _schedulable(func),
                cron,
                name=name,
                args=args,
                kwargs=kwargs,
                last_run=None if run_on_creation else last_run,
                catch_up=catch_up,
                queue=queue,
                datetime_kwarg=datetime_kwarg,
            )
        )
        return func

    return decorator


def _schedulable(func):
    """The Task a schedule queues: ``@register_task()``'s, or one that queues a django.tasks Task through our backend."""
    try:
        from .backend import FrameworkTask, QueueableTask
    except ImportError:  # Django 5.2 without the backport: no such task
        pass
    else:
        if isinstance(func, FrameworkTask):
            return QueueableTask(func)
    return registered_task(func)


# The name upstream django-toosimple-q users know it by.
schedule_task = schedule
