"""Which queues a worker claims from."""

from dataclasses import dataclass


@dataclass(frozen=True)
class QueueFilter:
    """Which queues a worker serves: only ``queues`` if given, none of ``excluded``.

    The claim reads the queues one by one (``store._queues_to_probe``); the rarer
    statements filter with ``apply``.
    """

    queues: tuple = ()
    excluded: tuple = ()

    def apply(self, queryset):
        if self.queues:
            queryset = queryset.filter(queue__in=self.queues)
        if self.excluded:
            queryset = queryset.exclude(queue__in=self.excluded)
        return queryset

    def serves(self, queue):
        return (not self.queues or queue in self.queues) and queue not in self.excluded
