"""Queued email: an email backend that sends each message from a worker.

``message_to_data`` and ``message_from_data`` turn an email message into
JSON data and back, as the queue stores it (no pickle).
"""

from .messages import message_from_data, message_to_data

__all__ = ["message_from_data", "message_to_data"]
