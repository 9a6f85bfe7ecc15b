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


NUL_REFUSED = "contains a NUL character (\\x00), which PostgreSQL cannot store"

# Deeper values are refused with a clear error, not a RecursionError from
# wherever Python's stack runs out (encoding, the driver, the database).
MAX_DEPTH = 100


class NotSerializable(TypeError):
    """A value that cannot be stored as JSON; ``path`` says where it was."""

    def __init__(self, value, path, reason=None):
        self.value = value
        self.path = path
        if reason is None:
            reason = (
                f"of type {type(value).__name__} cannot be stored: "
                "only JSON values, tuples, datetimes, dates, times, timedeltas, "
                "Decimals and UUIDs are supported (not their subclasses)"
            )
        super().__init__(f"{path} {reason}")


def _tagged(kind, value):
    return {TAG: kind, "value": value}


def encode(value, path="value", depth=0):
    """``value`` as plain JSON data, raising NotSerializable naming ``path``.

    Types are matched exactly: a subclass (an IntEnum, a namedtuple, an
    OrderedDict) would come back as its base type, so it is refused; but for
    datetimes and dates, which frozen clocks in tests subclass.
    """
    kind = type(value)
    # The common cases go fastest.
    if kind is str:
        if "\x00" in value:
            raise NotSerializable(value, path, NUL_REFUSED)
        return value
    if value is None or kind is int or kind is bool:
        return value
    if kind is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise NotSerializable(value, path)
        return value
    if kind in (list, tuple, dict):
        if depth >= MAX_DEPTH:
            raise NotSerializable(value, path, f"is nested more than {MAX_DEPTH} levels deep")
        if kind is dict:
            return _encode_dict(value, path, depth + 1)
        items = [encode(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
        return items if kind is list else _tagged("tuple", items)
    encoder = _ENCODERS.get(kind)
    if encoder is None and isinstance(value, datetime.date):
        # A frozen clock's (freezegun's FakeDatetime, FakeDate) are datetimes
        # and dates in all but name: what they hold comes back whole.
        encoder = _encode_datetime if isinstance(value, datetime.datetime) else _ENCODERS[datetime.date]
    if encoder is None:
        raise NotSerializable(value, path)
    return encoder(value)


def _encode_dict(mapping, path, depth):
    encoded = {}
    for key, item in mapping.items():
        if type(key) is not str:
            raise NotSerializable(key, f"key {key!r} of {path}")
        if "\x00" in key:
            raise NotSerializable(key, f"key {key!r} of {path}", NUL_REFUSED)
        encoded[key] = encode(item, f"{path}[{key!r}]", depth)
    # A dict with a "$type" key of its own is tagged, so as not to read as a tag.
    return _tagged("dict", encoded) if TAG in encoded else encoded


def _encode_datetime(value):
    if isinstance(value.tzinfo, zoneinfo.ZoneInfo):
        # An offset alone would lose the zone's DST rules.
        return _tagged("zoned_datetime", [value.isoformat(), value.tzinfo.key])
    return _tagged("datetime", value.isoformat())


_ENCODERS = {
    datetime.datetime: _encode_datetime,
    datetime.date: lambda value: _tagged("date", value.isoformat()),
    datetime.time: lambda value: _tagged("time", value.isoformat()),
    datetime.timedelta: lambda value: _tagged("timedelta", [value.days, value.seconds, value.microseconds]),
    decimal.Decimal: lambda value: _tagged("decimal", str(value)),
    uuid.UUID: lambda value: _tagged("uuid", str(value)),
}


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
    # Escaped as any dict is: a keyword argument named "$type" must not read as a tag.
    return encoded_args, _tagged("dict", encoded_kwargs) if TAG in encoded_kwargs else encoded_kwargs


def canonical(data):
    """A stable text for JSON data, for comparing calls (unique tasks)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
