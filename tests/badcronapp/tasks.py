"""A schedule with an invalid cron, for the `manage.py check` test.

Installed only when TOOSIMPLEQ_TEST_BAD_CRON_APP=1 (see tests/settings.py).
"""

from django_toosimple_q.decorators import register_task, schedule


@schedule(name="badcronapp.nightly_report", cron="30 25 * * *")
@register_task("badcronapp.report")
def report():
    pass
