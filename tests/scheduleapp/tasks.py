"""Schedules for the worker subprocesses of the scheduler tests.

Installed only when TOOSIMPLEQ_TEST_SCHEDULE_APP=1 (see tests/settings.py):
in tests/testapp they would fire in every worker of every test. Each
schedule has a queue of its own, so that a test picks the ones its workers
run with --queue.
"""

from django_toosimple_q.decorators import register_task, schedule


# Every second, every occurrence: the exactly-once test counts them by "when".
@schedule(cron="* * * * * *", catch_up=True, datetime_kwarg="when")
@register_task("scheduleapp.every_second", queue="every_second")
def every_second(when):
    return when


# Never due by themselves in a test's lifetime, but run at a worker's first start.
@schedule(cron="0 0 1 1 *", last_run=None)
@register_task("scheduleapp.at_start_a", queue="at_start_a")
def at_start_a():
    return "a"


@schedule(cron="0 0 1 1 *", run_on_creation=True)
@register_task("scheduleapp.at_start_b", queue="at_start_b")
def at_start_b():
    return "b"
