"""The email backend that queues messages instead of sending them."""

from django.core.mail.backends.base import BaseEmailBackend
from django.db import DatabaseError

from .messages import message_to_data
from .tasks import send_email


class QueueBackend(BaseEmailBackend):
    """Queue each message as a ``send_email`` task; a worker sends it through TOOSIMPLEQ_EMAIL_BACKEND.

    Returns how many messages were queued: a message identical to one still
    waiting is not queued twice. With ``fail_silently``, a message that
    cannot be stored is skipped, and a database error queues nothing,
    without raising.
    """

    def send_messages(self, email_messages):
        calls = []
        for message in email_messages:
            try:
                calls.append(([message_to_data(message)],))
            except TypeError:
                if not self.fail_silently:
                    raise
        try:
            executions = send_email.queue_many(calls)
        except DatabaseError:
            if not self.fail_silently:
                raise
            return 0
        return sum(1 for execution in executions if execution)
