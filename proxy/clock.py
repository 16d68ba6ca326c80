"""Time, passed in: every TTL, age and expiry reads a ``Clock``, so a test steps it.

``SystemClock`` is the real one. ``ManualClock`` only moves when told::

    >>> clock = ManualClock(wall=1_000.0)
    >>> clock.advance(61)
    >>> clock.time(), clock.monotonic()
    (1061.0, 61.0)
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds since the epoch (stored in the index; survives restarts)."""
        ...

    def monotonic(self) -> float:
        """Seconds for measuring intervals within this process."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM = SystemClock()


class ManualClock:
    """A clock for tests: ``advance`` moves both readings; ``sleep`` advances at once."""

    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._wall = wall
        self._mono = 0.0
        self.slept: list[float] = []

    def time(self) -> float:
        return self._wall + self._mono

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)
