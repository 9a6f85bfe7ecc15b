"""Growing pauses between attempts at something that keeps failing."""

import random


class Backoff:
    """Pauses that double from ``first`` up to ``longest`` seconds.

    A little jitter keeps workers that failed together from retrying together.
    """

    def __init__(self, first=0.1, longest=5.0):
        self.first = first
        self.longest = longest
        self.reset()

    def reset(self):
        self._delay = self.first

    def next_delay(self):
        delay = self._delay * random.uniform(1, 1.5)
        self._delay = min(self._delay * 2, self.longest)
        return delay
