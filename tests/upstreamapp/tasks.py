"""Our side of the tasks in the upstream fixtures (tests/upstream/make_fixtures.py).

The same names and options, with this package's decorators: the worker that
drains a migrated upstream database finds its tasks here. The schedules are
left out: their rows must outlive the migration as upstream left them.
"""

from django_toosimple_q.decorators import register_task


@register_task(name="upstream.add")
def add(a, b=0):
    return a + b


@register_task(name="upstream.echo")
def echo(value):
    return value


@register_task(name="upstream.pair", queue="reports", priority=3)
def pair(a, b):
    return (a, b)


@register_task(name="upstream.refresh", unique=True)
def refresh(key):
    return key
