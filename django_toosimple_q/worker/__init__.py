"""The engine that runs queued tasks; see loop.Worker."""

from .loop import Worker, exit_leaving_task_threads

__all__ = ["Worker", "exit_leaving_task_threads"]
