"""The router a site writes to keep the queue's tables in a database of their own (see the README)."""


class QueueRouter:
    database = "queue"

    def db_for_read(self, model, **hints):
        return self.database if model._meta.app_label == "toosimpleq" else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, **hints):
        return db == self.database if app_label == "toosimpleq" else None


class PostgresQueueRouter(QueueRouter):
    """The queue on PostgreSQL, the application on SQLite (the SQLite run's "pg_queue")."""

    database = "pg_queue"
