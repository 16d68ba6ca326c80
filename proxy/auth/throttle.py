"""Failed logins, limited per client address.

Each failed check of offered credentials costs the proxy a bcrypt check (~65 ms of
CPU at htpasswd's default cost) and gives a guesser one more try. Each address has a
bucket of ``burst`` failures that refills one failure every ``interval`` seconds; an
address with an empty bucket gets 429 ``TOOMANYREQUESTS`` with ``Retry-After`` and its
credentials are not checked at all, only looked up among recently verified ones (a
client that logged in before, behind the same NAT as a guesser, keeps working).

A check holds one of its address's tries while it runs (``checking``): a request that
finds them all held waits for those checks to end, then is checked (they succeeded:
their tries come back) or refused (they failed). Counting only when a check ended let
every request that came while the first checks ran be checked too: a guesser sending
its tries together got as many as it had connections, each time one try came back.

>>> from proxy.clock import ManualClock
>>> clock = ManualClock()
>>> throttle = LoginThrottle(burst=2, interval=10, clock=clock)
>>> throttle.failed("10.0.0.1"), throttle.failed("10.0.0.1"), throttle.retry_after("10.0.0.1")
(None, 10.0, 10.0)
>>> clock.advance(10); throttle.retry_after("10.0.0.1") is None
True
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict
from collections.abc import AsyncIterator

from proxy.clock import SYSTEM, Clock


class Check:
    """One check's standing: ``wait`` before it, when refused (its caller checks
    nothing); after it, the wait its failure left (the address is now throttled)."""

    def __init__(self) -> None:
        self.wait: float | None = None
        self.failed = False


# Addresses tracked; past this the one whose last failure is oldest is forgotten (a
# forgotten address starts with a full bucket: a bound on memory, not on guessing).
MAX_ADDRESSES = 16384


class LoginThrottle:
    def __init__(self, *, burst: int, interval: float, clock: Clock = SYSTEM) -> None:
        self.burst, self.interval, self.clock = burst, interval, clock
        # address -> (failures still allowed, as of when)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._running: dict[str, int] = {}  # address -> checks holding a try now
        self._ended: asyncio.Condition | None = None  # made on the loop, when first needed

    @property
    def enabled(self) -> bool:
        return self.burst > 0 and self.interval > 0

    def _level(self, address: str) -> float:
        """Failures still allowed from ``address`` now."""
        found = self._buckets.get(address)
        if found is None:
            return float(self.burst)
        allowed, when = found
        refilled = allowed + (self.clock.monotonic() - when) / self.interval
        if refilled >= self.burst:
            del self._buckets[address]  # full again: nothing to remember
            return float(self.burst)
        return refilled

    def retry_after(self, address: str) -> float | None:
        """Seconds until ``address`` may try credentials again; None: it may now."""
        if not self.enabled:
            return None
        level = self._level(address)
        if level >= 1:
            return None
        return float(math.ceil((1 - level) * self.interval))

    @contextlib.asynccontextmanager
    async def checking(self, address: str) -> AsyncIterator[Check]:
        """Around one check of credentials from ``address``: holds one of its tries, or
        waits for the checks holding them, or (none left) yields a refused ``Check``
        (``wait`` set: check nothing). Set ``failed`` on a check that failed."""
        check = Check()
        if not self.enabled:
            yield check
            return
        if self._ended is None:
            self._ended = asyncio.Condition()
        async with self._ended:
            while self._level(address) - self._running.get(address, 0) < 1:
                if not self._running.get(address):
                    check.wait = self.retry_after(address)
                    break
                await self._ended.wait()
            else:
                self._running[address] = self._running.get(address, 0) + 1
        if check.wait is not None:
            yield check
            return
        try:
            yield check
        finally:
            async with self._ended:
                left = self._running[address] - 1
                if left:
                    self._running[address] = left
                else:
                    del self._running[address]
                if check.failed:
                    check.wait = self.failed(address)
                self._ended.notify_all()

    def failed(self, address: str) -> float | None:
        """Count a failure; the wait it leaves (None: more tries are left)."""
        if not self.enabled:
            return None
        level = self._level(address) - 1
        self._buckets[address] = (max(level, 0.0), self.clock.monotonic())
        self._buckets.move_to_end(address)
        while len(self._buckets) > MAX_ADDRESSES:
            self._buckets.popitem(last=False)
        return self.retry_after(address)
