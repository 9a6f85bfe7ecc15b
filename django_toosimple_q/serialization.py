"""Arguments and results <-> JSON, faithfully and safely (no pickle).

Plain JSON values are stored as they are. Other supported values become a
tagged object ``{"$type": ..., "value": ...}``; a dict that happens to have a
``"$type"`` key is tagged too, so decoding is never ambiguous.
"""

import datetime
import decimal
import json
import uuid
import zoneinfo

TAG = "$type"


class NotSerializable(TypeError):
    """A value that cannot be stored as JSON; ``path`` says where it was."""

    def __init__(self, value, path):
        self.value = value
        self.path = path
        super().__init__(
            f"{path} of type {type(value).__name__} cannot be stored: "
            "only JSON values, tuples, datetimes, dates, times, timedeltas, "
            "Decimals and UUIDs are supported"
        )


def _tagged(kind, value):
    return {TAG: kind, "value": value}


def encode(value, path="value"):
    """``value`` as plain JSON data, raising NotSerializable naming ``path``."""
    # bool is an int and str is checked first: the common cases go fastest.
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotSerializable(value, path)
        return value
    if isinstance(value, list):
        return [encode(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, tuple):
        return _tagged("tuple", [encode(item, f"{path}[{i}]") for i, item in enumerate(value)])
    if isinstance(value, dict):
        encoded = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotSerializable(key, f"key {key!r} of {path}")
            encoded[key] = encode(item, f"{path}[{key!r}]")
        return _tagged("dict", encoded) if TAG in encoded else encoded
    # datetime is a date: it must be tested first.
    if isinstance(value, datetime.datetime):
        if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
            # An offset alone would lose the zone's DST rules.
            return _tagged("zoned_datetime", [value.isoformat(), value.tzinfo.key])
        return _tagged("datetime", value.isoformat())
    if isinstance(value, datetime.date):
        return _tagged("date", value.isoformat())
    if isinstance(value, datetime.time):
        return _tagged("time", value.isoformat())
    if isinstance(value, datetime.timedelta):
        return _tagged("timedelta", [value.days, value.seconds, value.microseconds])
    if isinstance(value, decimal.Decimal):
        return _tagged("decimal", str(value))
    if isinstance(value, uuid.UUID):
        return _tagged("uuid", str(value))
    raise NotSerializable(value, path)


_DECODERS = {
    "tuple": lambda items: tuple(decode(item) for item in items),
    "dict": lambda mapping: {key: decode(item) for key, item in mapping.items()},
    "datetime": datetime.datetime.fromisoformat,
    "zoned_datetime": lambda parts: datetime.datetime.fromisoformat(parts[0]).astimezone(zoneinfo.ZoneInfo(parts[1])),
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
    "timedelta": lambda parts: datetime.timedelta(*parts),
    "decimal": decimal.Decimal,
    "uuid": uuid.UUID,
}


def decode(data):
    """The value that ``encode`` turned into ``data``."""
    if isinstance(data, list):
        return [decode(item) for item in data]
    if isinstance(data, dict):
        kind = data.get(TAG)
        if kind is not None:
            return _DECODERS[kind](data["value"])
        return {key: decode(item) for key, item in data.items()}
    return data


def encode_call(args, kwargs):
    """A task's arguments as JSON data; the error names the argument at fault."""
    encoded_args = [encode(arg, f"argument {i}") for i, arg in enumerate(args)]
    encoded_kwargs = {}
    for key, arg in kwargs.items():
        encoded_kwargs[key] = encode(arg, f"argument {key!r}")
    return encoded_args, encoded_kwargs


def canonical(data):
    """A stable text for JSON data, for comparing calls (unique tasks)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
