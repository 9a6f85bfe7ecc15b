"""Running a task's coroutine (an ``async def`` task) to its end, on the calling thread.

Not on ``async_to_sync``'s helper thread: what sees the thread running the
task (the per-thread output capture, a timeout watching it) sees the
coroutine too.
"""

import asyncio
import inspect

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections


def call(func, args, kwargs):
    """``func(*args, **kwargs)``, and the coroutine it returns (an ``async def`` task's) run to its end."""
    value = func(*args, **kwargs)
    return run_coroutine(value) if inspect.iscoroutine(value) else value


def run_coroutine(coroutine):
    """Run ``coroutine`` on a new event loop of this thread; returns what it returns.

    The thread must not be running an event loop already.
    """
    return asyncio.run(_in_own_sync_thread(coroutine))


async def _in_own_sync_thread(coroutine):
    """Await ``coroutine`` with its own thread for Django's thread-sensitive calls.

    Without this context, the async ORM of every task of the process would
    share asgiref's one global thread (and its connection). That thread's
    connections are closed at the end, as a request's are.
    """
    async with ThreadSensitiveContext():
        try:
            return await coroutine
        finally:
            await sync_to_async(connections.close_all)()
