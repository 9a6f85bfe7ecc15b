"""The router a site writes to keep the queue's tables in a database of their own (see the README)."""


class QueueRouter:
    def db_for_read(self, model, **hints):
        return "queue" if model._meta.app_label == "toosimpleq" else None

    db_for_write = db_for_read

    def allow_migrate(self, db, app_label, **hints):
        return db == "queue" if app_label == "toosimpleq" else None
