"""Email messages <-> JSON data, so that queued email is stored without pickle.

The data is a dict of the message's fields; contents that are bytes are
stored in base64. A message comes back as an EmailMessage, or an
EmailMultiAlternatives when it had alternatives: a subclass's own
behaviour is not kept, only what it holds.
"""

import base64
import email
import email.message
import email.policy
from email.mime.base import MIMEBase

import django
from django.core.mail import EmailAttachment, EmailMessage, EmailMultiAlternatives
from django.utils.functional import Promise

# Django < 6 builds multipart/mixed unless told otherwise; Django 6 has no such option.
DEFAULT_MIXED_SUBTYPE = "mixed"


def message_to_data(message):
    """``message`` (an EmailMessage or EmailMultiAlternatives) as JSON data.

    Messages unpickled from an older Django are taken too: a field they lack
    takes its default. A content that is neither text nor bytes (nor an
    email message) raises TypeError.
    """
    data = {
        "subject": str(getattr(message, "subject", "") or ""),
        "body": str(getattr(message, "body", "") or ""),
        "from_email": _text_or_none(getattr(message, "from_email", None)),
        "to": _addresses(message, "to"),
        "cc": _addresses(message, "cc"),
        "bcc": _addresses(message, "bcc"),
        "reply_to": _addresses(message, "reply_to"),
        # Django sends str(value) of each header anyway.
        "headers": {str(name): str(value) for name, value in (getattr(message, "extra_headers", None) or {}).items()},
        "attachments": [_attachment_to_data(attachment) for attachment in getattr(message, "attachments", None) or []],
        "content_subtype": getattr(message, "content_subtype", "plain"),
    }
    alternatives = getattr(message, "alternatives", None)
    if alternatives is not None:
        data["alternatives"] = [
            {"mimetype": mimetype, **_content_to_data(content)} for content, mimetype in alternatives
        ]
    mixed_subtype = getattr(message, "mixed_subtype", DEFAULT_MIXED_SUBTYPE)
    if mixed_subtype != DEFAULT_MIXED_SUBTYPE:
        data["mixed_subtype"] = mixed_subtype
    encoding = getattr(message, "encoding", None)
    if encoding is not None:
        data["encoding"] = str(encoding)
    return data


def message_from_data(data):
    """The message that ``message_to_data`` turned into ``data``."""
    fields = {
        "subject": data["subject"],
        "body": data["body"],
        "from_email": data["from_email"],
        "to": data["to"],
        "cc": data["cc"],
        "bcc": data["bcc"],
        "reply_to": data["reply_to"],
        "headers": data["headers"],
    }
    if "alternatives" in data:
        alternatives = [(_content_from_data(item), item["mimetype"]) for item in data["alternatives"]]
        message = EmailMultiAlternatives(**fields, alternatives=alternatives)
    else:
        message = EmailMessage(**fields)
    # Set as they were, not through attach(): that would guess again what
    # the sender's attach() already settled (mimetypes, decoding).
    message.attachments = [_attachment_from_data(item) for item in data["attachments"]]
    message.content_subtype = data["content_subtype"]
    if "mixed_subtype" in data:
        message.mixed_subtype = data["mixed_subtype"]
    if "encoding" in data:
        message.encoding = data["encoding"]
    return message


def _addresses(message, field):
    return [str(address) for address in getattr(message, field, None) or []]


def _text_or_none(value):
    return None if value is None else str(value)


def _attachment_to_data(attachment):
    # A MIME part given as it is (MIMEBase, or MIMEPart since Django 6).
    if isinstance(attachment, email.message.Message):
        return {"mime_base64": _base64(attachment.as_bytes())}
    filename, content, mimetype = attachment
    # RFC 2231 filenames are (charset, language, name) tuples.
    return {"filename": filename, "mimetype": mimetype, **_content_to_data(content)}


def _attachment_from_data(data):
    if "mime_base64" in data:
        return _mime_part(base64.b64decode(data["mime_base64"]))
    filename = tuple(data["filename"]) if isinstance(data["filename"], list) else data["filename"]
    return EmailAttachment(filename, _content_from_data(data), data["mimetype"])


def _content_to_data(content):
    """An attachment's or alternative's content: text as it is, anything else as base64 bytes."""
    if isinstance(content, (str, Promise)):
        return {"content": str(content)}
    # A message/rfc822 attachment may hold a message object.
    if isinstance(content, EmailMessage):
        content = content.message().as_bytes()
    elif isinstance(content, email.message.Message):
        content = content.as_bytes()
    if isinstance(content, (bytes, bytearray, memoryview)):
        return {"content_base64": _base64(content)}
    raise TypeError(
        f"An email content of type {type(content).__name__} cannot be queued: only text, bytes and email messages"
    )


def _content_from_data(data):
    if "content" in data:
        return data["content"]
    return base64.b64decode(data["content_base64"])


def _base64(content):
    return base64.b64encode(content).decode("ascii")


def _mime_part(raw):
    """A MIME part parsed from ``raw``, of the class this Django's messages take as attachments."""
    if django.VERSION >= (6, 0):
        return email.message_from_bytes(raw, policy=email.policy.default)
    return email.message_from_bytes(raw, _class=_ParsedMIMEBase)


class _ParsedMIMEBase(MIMEBase):
    """A MIMEBase the parser can build: Django < 6 takes MIMEBase parts only."""

    def __init__(self, policy=email.policy.compat32):
        # MIMEBase's own __init__ makes a new, empty part.
        email.message.Message.__init__(self, policy)
