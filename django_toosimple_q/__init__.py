"""A task queue and cron scheduler for Django that needs nothing but Django and its database."""

__version__ = "0.1.0.dev0"
