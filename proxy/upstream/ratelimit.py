"""Token buckets that keep the proxy inside GAR's per-project, per-region quotas.

GAR counts requests per minute (60,000 reads, 18,000 writes by default). A bucket
of capacity ``C`` refilled at ``(rate - C)`` per minute never lets more than ``rate``
calls through in any 60-second window, yet still allows a burst of ``C`` (one
second's worth) after a quiet spell::

    bucket = TokenBucket(60)          # 60 per minute
    await bucket.acquire()            # waits when the minute's budget is spent
"""

from __future__ import annotations

import asyncio
import collections

from proxy.clock import SYSTEM, Clock


class TokenBucket:
    def __init__(self, per_minute: int, *, clock: Clock = SYSTEM) -> None:
        self.per_minute = per_minute
        self.capacity = max(1.0, per_minute / 60.0) if per_minute else 0.0
        self._refill_per_second = max(per_minute - self.capacity, 0.0) / 60.0
        self._tokens = self.capacity
        self._clock = clock
        self._updated = clock.monotonic()
        self._lock = asyncio.Lock()

    @property
    def unlimited(self) -> bool:
        return self.per_minute == 0

    def _take(self) -> float:
        """Take a token if there is one; else return how long until there will be."""
        now = self._clock.monotonic()
        self._tokens = min(
            self.capacity, self._tokens + (now - self._updated) * self._refill_per_second
        )
        self._updated = now
        if self._tokens >= 1.0 - 1e-9:  # float sums of refills land a hair short of 1
            self._tokens = max(0.0, self._tokens - 1.0)
            return 0.0
        if self._refill_per_second == 0:
            return 60.0
        return (1.0 - self._tokens) / self._refill_per_second

    async def acquire(self) -> float:
        """Wait for a token; returns the seconds waited (0 on the fast path)."""
        if self.unlimited:
            return 0.0
        waited = 0.0
        async with self._lock:  # first come, first served
            while (delay := self._take()) > 0:
                await self._clock.sleep(delay)
                waited += delay
        return waited


class RateLimits:
    """One read and one write bucket per (project, location), made on first use.

    Every request to GAR's host is charged (``take``): the quotas page counts each HTTP
    request of a pull or push, and which of them count as writes is not said, so a
    request that writes (an upload session's PATCH/PUT/DELETE, a manifest PUT) is
    charged to both buckets, as the conservative reading (docs/GAR.md "Quotas").
    ``charged`` counts what was charged to each (project, location, bucket).
    """

    def __init__(
        self, reads_per_minute: int, writes_per_minute: int, clock: Clock = SYSTEM
    ) -> None:
        self._rates = {False: reads_per_minute, True: writes_per_minute}
        self._clock = clock
        self._buckets: dict[tuple[str, str, bool], TokenBucket] = {}
        self.charged: collections.Counter[tuple[str, str, str]] = collections.Counter()

    async def take(self, project: str, location: str, *, write: bool) -> float:
        """Charge one request; returns the seconds it waited for quota."""
        self.charged[(project, location, "read")] += 1
        waited = await self.bucket(project, location, write=False).acquire()
        if write:
            self.charged[(project, location, "write")] += 1
            waited += await self.bucket(project, location, write=True).acquire()
        return waited

    def bucket(self, project: str, location: str, *, write: bool) -> TokenBucket:
        key = (project, location, write)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rates[write], clock=self._clock)
        return bucket
