"""The engine that runs queued tasks; see loop.Worker."""

from .loop import Worker

__all__ = ["Worker"]
