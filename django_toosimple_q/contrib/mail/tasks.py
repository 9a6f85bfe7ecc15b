"""The task that sends queued email through the real backend."""

from django.core.mail import get_connection

from ... import conf
from ...decorators import register_task
from .messages import message_from_data


# Upstream 1.x's name and options: the rows it queued run here too.
@register_task("django_toosimple_q.contrib.mail.tasks.send_email", unique=True, retries=10, retry_delay=3)
def send_email(messages):
    """Send ``messages`` (data of message_to_data) through TOOSIMPLEQ_EMAIL_BACKEND; returns how many were sent.

    A list, as upstream queued it: QueueBackend queues one message per call,
    so that a failure retries that message only.
    """
    with get_connection(backend=conf.EMAIL_BACKEND) as connection:
        return connection.send_messages([message_from_data(data) for data in messages])
