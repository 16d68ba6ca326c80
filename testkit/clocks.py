"""A clock for tests whose background loops must wait for the test: ``SteppedClock``.

``proxy.clock.ManualClock`` advances by itself when slept on, which suits code that
sleeps inside one request (a scan wait). A loop that sleeps between rounds (the
upstream check) would spin on it. Here ``sleep`` waits until the test has advanced the
clock past the sleeper's deadline, from any thread (the proxy runs on its own)::

    clock = SteppedClock()
    ... the proxy's check loop sleeps for 30 s ...
    clock.advance(30)          # that loop wakes, once
"""

from __future__ import annotations

import asyncio
import threading


class SteppedClock:
    def __init__(self, wall: float = 1_700_000_000.0) -> None:
        self._wall = wall
        self._mono = 0.0
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def time(self) -> float:
        return self._wall + self._mono

    def monotonic(self) -> float:
        return self._mono

    @property
    def sleepers(self) -> int:
        """How many ``sleep`` calls are waiting now (a test waits for its loop to park)."""
        with self._lock:
            return len(self._sleepers)

    async def sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if seconds <= 0:
                return
            entry = (self._mono + seconds, loop, woken)
            self._sleepers.append(entry)
        try:
            await woken
        finally:
            with self._lock:
                if entry in self._sleepers:
                    self._sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._mono += seconds
            due = [s for s in self._sleepers if s[0] <= self._mono]
            self._sleepers = [s for s in self._sleepers if s[0] > self._mono]
        for _, loop, woken in due:
            loop.call_soon_threadsafe(_wake, woken)


def _wake(woken: asyncio.Future[None]) -> None:
    if not woken.done():
        woken.set_result(None)
