"""The public decorators: ``@register_task()`` and ``@schedule(...)``."""

from .registry import Task, register


def register_task(name=None, *, queue="default", priority=0, unique=False, retries=0, retry_delay=0):
    """Register the decorated function as a task that can be queued.

    ``retries`` is how many times a failed execution is queued again (-1:
    forever); ``retry_delay`` the seconds before the first retry, doubling
    each time.
    """
    if callable(name):
        raise TypeError("register_task must be called: write @register_task(), not @register_task")

    def decorator(func):
        return register(
            Task(
                func,
                name=name,
                queue=queue,
                priority=priority,
                unique=unique,
                retries=retries,
                retry_delay=retry_delay,
            )
        )

    return decorator
