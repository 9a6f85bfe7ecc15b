"""Upstream 1.2.1's rows made this project's: used by migration 0017 only.

Upstream pickled args, kwargs and results. Each becomes JSON where it can
(see serialization.py); pickles are loaded here once, from the database the
project already trusted them from. What cannot be converted is said, never
dropped in silence: a waiting call becomes INVALID with the reason in
``error`` (its arguments are lost: it could not run anyway), a finished one
keeps its preview and gets the reason appended to ``error``.
"""

import base64
import pickle

from ..contrib.mail.messages import message_to_data
from ..models import dedup_key
from ..registry import tasks_registry
from ..serialization import encode, encode_call

WAITING = ("QUEUED", "SLEEPING")
BATCH = 500

# Upstream's queued emails: a list of EmailMessage objects, stored as data.
MAIL_TASK = "django_toosimple_q.contrib.mail.tasks.send_email"


class NotConvertible(Exception):
    pass


def unpickle(text):
    """What django-picklefield stored in ``text`` (base64 of a pickle)."""
    if text is None:
        return None
    try:
        return pickle.loads(base64.b64decode(text))
    except Exception as error:
        raise NotConvertible(f"cannot be unpickled ({type(error).__name__}: {error})") from error


def convert_call(task_name, args_text, kwargs_text):
    """The (args, kwargs) of an upstream call as storable values; raises NotConvertible."""
    args = list(unpickle(args_text) or ())
    kwargs = dict(unpickle(kwargs_text) or {})
    try:
        if task_name == MAIL_TASK and args:
            args = [[message_to_data(message) for message in args[0]], *args[1:]]
        encode_call(args, kwargs)
    except (TypeError, AttributeError, ValueError) as error:  # not storable, or a broken value
        raise NotConvertible(str(error)) from error
    return args, kwargs


def convert_result(text):
    """An upstream result as a storable value, or None when it cannot be one."""
    try:
        value = unpickle(text)
        encode(value)
    except (NotConvertible, TypeError):
        return None
    return value


def convert_rows(apps, schema_editor):
    TaskExec = apps.get_model("toosimpleq", "TaskExec")
    rows = TaskExec.objects.using(schema_editor.connection.alias).order_by("id")
    waiting_keys = set()
    last_id = 0
    while batch := list(rows.filter(id__gt=last_id)[:BATCH]):
        for row in batch:
            convert_row(row, waiting_keys)
        TaskExec.objects.using(schema_editor.connection.alias).bulk_update(
            batch,
            [
                "json_args",
                "json_kwargs",
                "json_result",
                "queue",
                "priority",
                "dedup_key",
                "state",
                "error",
                "result_preview",
            ],
        )
        last_id = batch[-1].id


def convert_row(row, waiting_keys):
    task = tasks_registry.get(row.task_name)
    # A task gone from the code keeps the defaults, and becomes INVALID when a worker meets it.
    if task is not None:
        row.queue, row.priority = task.queue_name, task.priority
    row.error = row.error or ""
    row.result_preview = row.result_preview or ""
    try:
        row.json_args, row.json_kwargs = convert_call(row.task_name, row.args, row.kwargs)
    except NotConvertible as error:
        row.json_args, row.json_kwargs = [], {}
        reason = f"Upgrading from django-toosimple-q 1.x: the arguments {error}"
        if row.state in WAITING:
            row.state, row.error = "INVALID", reason
        else:
            row.error = f"{row.error}\n{reason}".lstrip()
    row.json_result = convert_result(row.result)
    if task is not None and task.unique and row.state in WAITING:
        key = dedup_key(row.task_name, *encode_call(row.json_args, row.json_kwargs))
        # Upstream's check-then-insert could let twins in: the first keeps the key.
        if key not in waiting_keys:
            waiting_keys.add(key)
            row.dedup_key = key
