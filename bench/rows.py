"""What the task table holds before and after each measurement, in raw SQL.

Rows are copies of a template: one row written by the engine's own queue(),
saved aside in a table of its own. Copying it server-side fills the 1,000,000
rows of the history scenario in seconds, and stays right whatever columns
the model gains: no column is named here but those a scenario sets.
"""

import json

TASKS = "toosimpleq_taskexec"
WORKERS = "toosimpleq_workerstatus"
TEMPLATE = "bench_template"

# The tasks of bench/tasks.py, by the names the engine registers them under.
NOOP = "bench.tasks.noop"
STAMP = "bench.tasks.stamp"
COUNTED = "bench.tasks.counted"

# The columns of a noop queued through Django's task framework (the backend's "default" alias).
FRAMEWORK_NOOP = {"task_name": "bench.tasks.framework_noop", "backend": "default"}

# The baseline's pickup wake-up on PostgreSQL: the enqueuer notifies it.
CHANNEL = "bench_baseline"


def decoded(value):
    """A JSON column's value: psycopg decodes jsonb, SQLite keeps JSON as text."""
    return json.loads(value) if isinstance(value, str) else value


class Table:
    """The task table of ``db``, through ``connection`` (autocommit)."""

    def __init__(self, db, connection):
        self.db = db
        self.connection = connection
        self._template_columns = None

    def _execute(self, sql, params=()):
        return self.db.execute(self.connection, sql, params)

    def save_template(self):
        """Keep a copy of the newest row, which must come from queue() of the noop task."""
        self._execute(f"DROP TABLE IF EXISTS {TEMPLATE}")
        self._execute(f"CREATE TABLE {TEMPLATE} AS SELECT * FROM {TASKS} WHERE id = (SELECT max(id) FROM {TASKS})")
        cursor = self._execute(f"SELECT * FROM {TEMPLATE} LIMIT 0")
        self._template_columns = [column[0] for column in cursor.description if column[0] != "id"]

    def _copy_template(self, columns, computed=None):
        """The column list and SELECT list that copy the template with ``columns`` set, and their parameters.

        ``computed``: columns set to an SQL expression rather than a parameter.
        """
        if self._template_columns is None:
            raise RuntimeError("save_template() first")
        names = self._template_columns
        computed = computed or {}
        expressions = [computed.get(name, "%s" if name in columns else name) for name in names]
        params = [columns[name] for name in names if name in columns and name not in computed]
        return ", ".join(names), ", ".join(expressions), params

    def insert_copies(self, count, numbered=False, **columns):
        """Insert ``count`` copies of the template with ``columns`` set, in one statement.

        ``numbered``: the arguments of the n-th copy are [n] (the counted task's).
        """
        postgres = self.db.vendor == "postgres"
        numbers = {"args": "jsonb_build_array(n.i)" if postgres else "json_array(n.i)"}
        names, expressions, params = self._copy_template(columns, numbers if numbered else None)
        insert = f"INSERT INTO {TASKS} ({names}) SELECT {expressions} FROM {TEMPLATE}"
        if postgres:
            self._execute(f"{insert}, generate_series(1, %s) AS n(i)", [*params, count])
        else:
            numbering = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %s)"
            self._execute(f"{numbering} {insert}, n", [count, *params])

    def reset(self, *, queued, finished=0, queued_as=None, numbered=False, waiting_elsewhere=(None, 0)):
        """Leave ``finished`` SUCCEEDED rows, then ``queued`` QUEUED noop rows, and nothing else.

        ``queued_as``: other columns of the queued rows (FRAMEWORK_NOOP).
        ``numbered``: the queued rows' arguments are [1], [2]... (COUNTED's).
        ``waiting_elsewhere``: (queue, count), count more QUEUED noop rows on that queue.
        """
        if self.db.vendor == "postgres":
            # A new, unbloated table for each run. CASCADE: ScheduleExec's
            # foreign key refuses it otherwise (the benchmark has no schedules).
            self._execute(f"TRUNCATE {TASKS} CASCADE")
        else:
            self._execute(f"DELETE FROM {TASKS}")
        now = self.db.now()
        if finished:
            self.insert_copies(finished, task_name=NOOP, state="SUCCEEDED", started=now, finished=now)
        if queued:
            columns = {"task_name": NOOP, "state": "QUEUED", "due": now, **(queued_as or {})}
            self.insert_copies(queued, numbered, **columns)
        queue, count = waiting_elsewhere
        if count:
            self.insert_copies(count, task_name=NOOP, state="QUEUED", due=now, queue=queue)
        if self.db.vendor == "postgres":
            # What autovacuum would do a little later, at a moment that could
            # fall in the middle of a measurement.
            self._execute(f"ANALYZE {TASKS}")

    def enqueue(self, task_name):
        """Queue ``task_name`` as the baseline's enqueuer does: one statement; returns the row id.

        On PostgreSQL it also sends the NOTIFY, which is delivered when the
        statement commits: a listener wakes when the row is visible.
        """
        now = self.db.now()
        columns = {"task_name": task_name, "state": "QUEUED", "due": now, "created": now}
        names, expressions, params = self._copy_template(columns)
        insert = f"INSERT INTO {TASKS} ({names}) SELECT {expressions} FROM {TEMPLATE} RETURNING id"
        if self.db.vendor == "postgres":
            sql = f"WITH queued AS ({insert}) SELECT id, pg_notify('{CHANNEL}', '') FROM queued"
        else:
            sql = insert
        return self._execute(sql, params).fetchall()[0][0]

    def enqueue_many(self, task_name, count, rows_per_statement):
        """Queue ``count`` tasks as a bulk enqueuer would: INSERTs of ``rows_per_statement`` rows, one transaction.

        The values are sent as parameters, as queue_many() sends them, each
        row the template's, read once as text; PostgreSQL casts them to
        their columns.
        """
        names = self._template_columns
        if names is None:
            raise RuntimeError("save_template() first")
        as_text = ", ".join(f"CAST({name} AS TEXT)" for name in names)
        template = dict(zip(names, self._execute(f"SELECT {as_text} FROM {TEMPLATE}").fetchone()))
        now = str(self.db.now())
        values = [*{**template, "task_name": task_name, "state": "QUEUED", "due": now, "created": now}.values()]
        row = f"({', '.join(['%s'] * len(names))})"
        self._execute("BEGIN")
        for start in range(0, count, rows_per_statement):
            rows = min(rows_per_statement, count - start)
            self._execute(f"INSERT INTO {TASKS} ({', '.join(names)}) VALUES {', '.join([row] * rows)}", values * rows)
        self._execute("COMMIT")

    def write_back(self):
        """SQLite: write the WAL back to the database file, which the next commit writes from its start.

        PostgreSQL: nothing.
        """
        if self.db.vendor == "sqlite":
            self._execute("PRAGMA wal_checkpoint(RESTART)")

    def result_of(self, task_id):
        """The result of a SUCCEEDED row, or None while it has not succeeded."""
        row = self._execute(f"SELECT result FROM {TASKS} WHERE id = %s AND state = 'SUCCEEDED'", [task_id]).fetchone()
        return None if row is None else decoded(row[0])

    def worker_started(self, pid):
        """When the engine worker of process ``pid`` started its loop; None until it has."""
        row = self._execute(f"SELECT started FROM {WORKERS} WHERE pid = %s ORDER BY id DESC", [pid]).fetchone()
        return row[0] if row else None

    def last_worker_id(self):
        return self._execute(f"SELECT max(id) FROM {WORKERS}").fetchone()[0]

    def last_finished(self):
        return self._execute(f"SELECT max(finished) FROM {TASKS}").fetchone()[0]

    def count_unfinished(self):
        """Rows not SUCCEEDED: after a drain of noop tasks, there must be none."""
        return self._execute(f"SELECT count(*) FROM {TASKS} WHERE state <> 'SUCCEEDED'").fetchone()[0]
