"""Which database errors an outage explains, and which no retry can mend.

A worker waits out a transient error (the connection dropped, the server
restarts, SQLite is locked) and carries on. Anything else (a value the
database refuses, SQL it cannot run, a transaction it cannot start) would
fail the same way at every retry: the worker says what is wrong instead of
retrying forever.
"""

from django.db import InterfaceError, OperationalError

# SQLState classes of PostgreSQL that a later attempt can get past:
# connection exceptions, lack of resources, operator intervention (a
# restart, "the database system is starting up"), and transaction rollbacks
# (serialization failures, deadlocks).
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40")

# sqlite3 raises OperationalError for mistakes as well as for a locked file.
PERMANENT_SQLITE_MESSAGES = (
    "within a transaction",  # BEGIN inside the caller's transaction
    "no such table",
    "no such column",
    "has no column",
    "syntax error",
)

# A table or column not made yet: PostgreSQL's undefined table and column,
# SQLite's words for them.
UNDEFINED_SQLSTATES = ("42P01", "42703")
UNDEFINED_SQLITE_MESSAGES = ("no such table", "no such column", "has no column")


def is_transient(error):
    """Whether ``error``, a database error, may go away if the same thing is tried again later."""
    if isinstance(error, InterfaceError):
        return True
    if not isinstance(error, OperationalError):
        return False  # data, integrity and programming errors
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in TRANSIENT_SQLSTATE_CLASSES
    message = str(error)
    return not any(permanent in message for permanent in PERMANENT_SQLITE_MESSAGES)


def is_schema_behind(error):
    """Whether ``error`` says a table or column does not exist: ``migrate`` has not made it yet.

    A worker started with the web server may come up before ``migrate``, or
    while it runs, between two migrations.
    """
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    if sqlstate:
        return sqlstate in UNDEFINED_SQLSTATES
    return any(message in str(error) for message in UNDEFINED_SQLITE_MESSAGES)
