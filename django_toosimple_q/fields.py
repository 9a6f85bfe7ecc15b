"""A JSON field that reads back the Python values it was given.

``TaskExec.args``, ``kwargs`` and ``result`` hold tuples, datetimes,
Decimals... stored as tagged JSON (see serialization.py): code reads and
writes them as Python values, as upstream's pickled fields let it, while the
column stays plain JSON that the admin, the database and other languages read.
"""

from django.db import models

from . import serialization


class TaggedJSONField(models.JSONField):
    def get_prep_value(self, value):
        return super().get_prep_value(serialization.encode(value))

    def from_db_value(self, value, expression, connection):
        return serialization.decode(super().from_db_value(value, expression, connection))
