"""The running fills, by digest: a request for a blob being fetched joins its fill."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from proxy.cache.fills import Committer, Fill, Opener, Room, always_room
from proxy.oci.digest import Digest


class Fills:
    """The running fills, by digest; ``start`` joins one that is already going."""

    def __init__(
        self,
        paths: Callable[[Digest], tuple[Path, Path]],
        commit: Committer,
        limit: float,
        room: Room = always_room,
    ) -> None:
        self._running: dict[Digest, Fill] = {}
        self._paths = paths  # digest -> (temp, final)
        self._commit = commit
        self._limit = limit
        self._room = room
        # Called with each finished fill (done or failed): the app counts its bytes.
        self.on_finished: Callable[[Fill], None] = lambda fill: None
        self.on_disk_full: Callable[[Digest], None] = lambda digest: None
        self.started = 0

    def __len__(self) -> int:
        return len(self._running)

    def get(self, digest: Digest) -> Fill | None:
        return self._running.get(digest)

    def running(self) -> list[Fill]:
        """The fills now running (for the status page)."""
        return list(self._running.values())

    def pending_bytes(self) -> int:
        """Bytes running fills will still write (their disk space is spoken for)."""
        return sum(max((f.size or 0) - f.written, 0) for f in self._running.values())

    def start(self, digest: Digest, opener: Opener) -> Fill:
        fill = self._running.get(digest)
        if fill is not None:
            return fill
        fill = self._running[digest] = Fill(digest, *self._paths(digest))
        self.started += 1
        fill.task = asyncio.create_task(self._run(fill, opener), name=f"fill {digest}")
        return fill

    async def _run(self, fill: Fill, opener: Opener) -> None:
        try:
            await fill.run(opener, self._commit, self._limit, self._room)
        finally:
            self._running.pop(fill.digest, None)
            if fill.disk_full:
                self.on_disk_full(fill.digest)
            self.on_finished(fill)

    async def drain(self, grace: float) -> None:
        """Let running fills finish, up to ``grace`` seconds (a graceful stop)."""
        tasks = [f.task for f in self._running.values() if f.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=grace)

    async def aclose(self) -> None:
        tasks = [f.task for f in self._running.values() if f.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
