"""Requests and bytes sent per minute over the last hour: the status page's chart.

One bucket per minute of the injected clock, at most ``MINUTES`` kept, so memory is
bounded whatever the traffic. The request middleware adds each registry request
(probes and scrapes left out); adding is one clock reading and two integer additions::

    >>> from proxy.clock import ManualClock
    >>> clock = ManualClock()
    >>> activity = Activity(clock)
    >>> activity.add(100); clock.advance(120); activity.add(5); activity.add(5)
    >>> activity.series()[-3:]   # (minutes ago, requests, bytes): 2 min ago, 1, now
    [(2, 1, 100), (1, 0, 0), (0, 2, 10)]
"""

from __future__ import annotations

import collections

from proxy.clock import SYSTEM, Clock

MINUTES = 60


class Activity:
    def __init__(self, clock: Clock = SYSTEM, minutes: int = MINUTES) -> None:
        self.clock = clock
        self.minutes = minutes
        self._minute = -1
        self._bucket = [0, 0]
        # minute -> [requests, bytes]; the oldest fall off past ``minutes``.
        self._buckets: collections.OrderedDict[int, list[int]] = collections.OrderedDict()

    def add(self, sent: int) -> None:
        minute = int(self.clock.monotonic() // 60)
        if minute != self._minute:
            self._minute = minute
            self._bucket = self._buckets[minute] = [0, 0]
            while len(self._buckets) > self.minutes:
                self._buckets.popitem(last=False)
        self._bucket[0] += 1
        self._bucket[1] += sent

    def series(self) -> list[tuple[int, int, int]]:
        """``(minutes ago, requests, bytes)`` for each of the last ``minutes`` minutes,
        oldest first, quiet minutes as zeros."""
        now = int(self.clock.monotonic() // 60)
        series = []
        for ago in range(self.minutes - 1, -1, -1):
            requests, sent = self._buckets.get(now - ago, (0, 0))
            series.append((ago, requests, sent))
        return series
