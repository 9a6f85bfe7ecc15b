from django.db import models


class Execution(models.Model):
    """One row per task run, keyed by the task: a second run of the same key
    fails on the unique constraint, so "exactly once" can be checked from any
    process, workers included."""

    key = models.CharField(max_length=200, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.key
