"""The demo's tasks: one that prints, one that takes its time, one that fails now and then, one that always
fails, and schedules (one run only by hand, from the admin)."""

import random
import time

from django_toosimple_q.decorators import register_task, schedule


@schedule(cron="* * * * *", args=["every minute"])
@register_task()
def say_hello(name):
    print(f"Hello {name}!")
    return f"said hello to {name}"


@register_task(queue="slow", priority=-1)
def take_your_time(seconds):
    time.sleep(seconds)
    return seconds


@register_task(retries=2, retry_delay=1)
def flaky():
    if random.random() < 0.7:
        raise RuntimeError("this one fails 70% of the time, and is tried again")
    return "lucky"


@register_task()
def divide(a, b):
    return a / b


@schedule(cron="0 * * * *", name="hourly report", kwargs={"period": "hour"})
@schedule(cron="manual", name="clean up (run it from the admin)", kwargs={"period": "all"})
@register_task(unique=True)
def report(period):
    print(f"Reporting on the last {period}")
    return {"period": period, "tasks": random.randint(1, 100)}


def queue_demo_tasks():
    """Queue a few of each; returns their executions."""
    return [
        *(say_hello.queue(name) for name in ("John", "Jane", "the world")),
        *(take_your_time.queue(seconds) for seconds in (1, 2, 3)),
        *(flaky.queue() for _ in range(3)),
        divide.queue(1, 0),
        divide.queue(22, 7),
    ]
