"""The blob cache: verified files on disk, their index, fills, readers and eviction.

This is the only object the services use for blob bytes. It answers "do we have
it?" with a ``stat`` (a file under ``blobs/`` is verified by construction), streams
files out in large reads, counts open readers so eviction never pulls a blob from
under one, and keeps the total under the configured cap (least recently used first,
never what a pinned manifest needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from proxy.cache.bodies import FileBody, Segment
from proxy.cache.cleanstate import CleanState, directory_times
from proxy.cache.expiry import unread_blobs, unread_manifests
from proxy.cache.fills import FOLLOW_READ_SIZE, Fill, Opener
from proxy.cache.fillset import Fills
from proxy.cache.index import CacheIndex
from proxy.cache.store import BlobStore
from proxy.oci.digest import Digest

log = logging.getLogger("gar_proxy.cache")

# Large reads: per-read work on the event loop, not the copy, limits a warm stream
# served as bytes (1 MiB served 4 clients 10-30% faster than 256 KiB; bench/RESULTS.md).
READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class RecoveryReport:
    temp_removed: int
    rows_dropped: int
    files_adopted: int
    files_removed: int


class BlobCache:
    def __init__(
        self,
        store: BlobStore,
        index: CacheIndex,
        *,
        max_size: int,
        fill_limit: float,
        min_free: int = 0,
        free_bytes: Callable[[], int] | None = None,
    ):
        self.store = store
        self.index = index
        self.max_size = max_size
        # The floor of free space on the cache's filesystem (cache.min_free), and the probe
        # of that free space (injectable: tests give readings instead of filling a disk).
        self.min_free = min_free
        self.free_bytes = free_bytes or (lambda: shutil.disk_usage(store.root).free)
        self._spill: set[Digest] = set()  # ENOSPC'd fills: their next request passes through
        self.fills = Fills(self._paths, self.admit, fill_limit, self.make_room)
        self.fills.on_disk_full = self._spill.add
        self._readers: Counter[Digest] = Counter()
        self._evicting = asyncio.Lock()
        self._background: set[asyncio.Task[tuple[int, int]]] = set()
        self.interrupted = False  # files and rows may disagree: no clean close
        # (blobs, bytes) after each eviction; the app counts them in its metrics.
        self.on_evict: Callable[[int, int], None] = lambda blobs, size: None

    @contextlib.contextmanager
    def _reconcile_if_interrupted(self) -> Iterator[None]:
        """Files and rows change together here; stopped between the two (a cancelled
        fill at shutdown), they may disagree, so this close is not a clean one."""
        try:
            yield
        except BaseException:
            self.interrupted = True
            raise

    def _paths(self, digest: Digest) -> tuple[Path, Path]:
        return self.store.new_temp(), self.store.path(digest)

    async def admit(self, temp: Path, digest: Digest, size: int) -> None:
        """Make a verified file the cached blob ``digest``: moved into place, indexed,
        and the cache brought back under its cap in the background. Fills and uploads
        both end here; the caller has checked the bytes against ``digest``."""
        with self._reconcile_if_interrupted():
            await asyncio.to_thread(self.store.commit, temp, digest)
            await self.index.blobs.add(digest, size)
        if self.index.blobs.total_bytes > self.max_size:
            task = asyncio.get_running_loop().create_task(self.evict())
            self._background.add(task)  # the loop keeps only weak references to tasks
            task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """At close: stop the evictions still running in the background. One cut between
        unlinking files and deleting their rows marks the cache ``interrupted``, so the
        next start reconciles instead of trusting a record taken mid-eviction."""
        tasks = list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def make_room(self, digest: Digest, size: int) -> bool:
        """Before a fill of ``size`` bytes: evict least recently used blobs so that it
        fits under the effective cap, min(max_size, used + free - min_free); False when
        it still cannot fit on the disk (the blob is then passed through uncached)."""
        if digest in self._spill:
            self._spill.discard(digest)  # once: a later request tries to cache it again
            return False
        if size > self.max_size:  # would only flush the whole cache, then go itself
            return False
        spare = self.free_bytes() - self.min_free - self.fills.pending_bytes()
        excess = max(size - spare, self.index.blobs.total_bytes + size - self.max_size)
        if excess <= 0:
            return True
        _, freed = await self.evict(max(self.index.blobs.total_bytes - excess, 0))
        return size <= max(spare + freed, self.free_bytes() - self.min_free)

    def size(self, digest: Digest) -> int | None:
        """Size of a verified cached blob, or None when it is not (fully) here."""
        return self.store.size(digest)

    def fill(self, digest: Digest, opener: Opener) -> Fill:
        return self.fills.start(digest, opener)

    def read(self, digest: Digest, start: int = 0, end: int | None = None) -> FileBody | None:
        """``[start, end)`` of a cached blob, opened now: from here until the body is
        done, neither eviction here nor a ``gc`` elsewhere can take the bytes away.
        None (a miss) if the blob went since it was looked up."""
        try:
            fd = os.open(self.store.path(digest), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            stop = end if end is not None else os.fstat(fd).st_size
        except OSError:
            os.close(fd)
            raise
        self._readers[digest] += 1
        self.index.touch(digest)

        def release() -> None:
            os.close(fd)
            self._release(digest)

        async def segments() -> AsyncGenerator[Segment, None]:
            if start < stop:
                yield fd, start, stop - start

        return FileBody(segments, READ_SIZE, on_close=release)

    def follow(self, fill: Fill, start: int = 0, end: int | None = None) -> FileBody:
        """The bytes of a running fill as they land (see ``Fill.segments``); counted as
        a reader from now, so the blob outlives the fill until the body is done."""
        self._readers[fill.digest] += 1
        return FileBody(
            lambda: fill.segments(start, end),
            FOLLOW_READ_SIZE,
            on_close=lambda: self._release(fill.digest),
        )

    def _release(self, digest: Digest) -> None:
        self._readers[digest] -= 1
        if self._readers[digest] <= 0:
            del self._readers[digest]

    def in_use(self, digest: Digest) -> bool:
        return self._readers[digest] > 0 or self.fills.get(digest) is not None

    async def evict(self, target: int | None = None) -> tuple[int, int]:
        """Remove least recently used blobs until the total is under ``target``."""
        target = self.max_size if target is None else target
        removed = freed = 0
        async with self._evicting:
            await self.index.blobs.recount()
            while self.index.blobs.total_bytes > target:
                victims = [
                    (d, s)
                    for d, s in await self.index.blobs.eviction_candidates()
                    if not self.in_use(d)
                ]
                if not victims:
                    log.warning("cache over its cap but every blob is in use or pinned")
                    break
                chosen: list[Digest] = []
                excess = self.index.blobs.total_bytes - target  # fills may add bytes meanwhile
                for digest, size in victims:
                    if excess <= 0:
                        break
                    chosen.append(digest)
                    excess -= size
                    freed += size
                with self._reconcile_if_interrupted():
                    await asyncio.to_thread(self._remove_files, chosen)
                    await self.index.blobs.remove(chosen)
                removed += len(chosen)
        if removed:
            log.info("evicted %d blobs (%d bytes)", removed, freed)
            self.on_evict(removed, freed)
        return removed, freed

    async def remove(
        self, pick: Callable[[], Awaitable[Iterable[Digest]]]
    ) -> tuple[list[Digest], int]:
        """Remove the cached blobs ``pick`` chooses (a purge; asked under eviction's
        lock, so no eviction or expiry runs meanwhile), by eviction's rules: never one
        being read or filled. (removed, bytes freed)."""
        async with self._evicting:
            sizes = {d: self.size(d) for d in await pick() if not self.in_use(d)}
            chosen = [d for d, size in sizes.items() if size is not None]
            with self._reconcile_if_interrupted():
                await asyncio.to_thread(self._remove_files, chosen)
                await self.index.blobs.remove(chosen)
        freed = sum(sizes[d] or 0 for d in chosen)
        if chosen:
            log.info("purged %d blobs (%d bytes)", len(chosen), freed)
        return chosen, freed

    def _remove_files(self, digests: list[Digest]) -> None:
        """On a thread: hundreds of unlinks would stall every request on the loop."""
        for digest in digests:
            self.store.remove(digest)

    async def expire(self, max_age: float) -> tuple[int, int]:
        """Remove blobs and manifests not read for ``max_age`` seconds (``cache.max_age``);
        (blobs removed, manifests removed). Blobs being read or filled stay."""
        before = self.index.clock.time() - max_age
        async with self._evicting:
            blobs = [d for d in await unread_blobs(self.index, before) if not self.in_use(d)]
            with self._reconcile_if_interrupted():
                await asyncio.to_thread(self._remove_files, blobs)
                await self.index.blobs.remove(blobs)
            manifests = await unread_manifests(self.index, before)
            await self.index.manifests.remove(manifests)
        if blobs or manifests:
            log.info(
                "expired %d blobs and %d manifests unread for %gs",
                len(blobs),
                len(manifests),
                max_age,
            )
        return len(blobs), len(manifests)

    async def state(self) -> CleanState:
        """What ``clean.json`` records at a clean close (``proxy.cache.cleanstate``)."""
        count, total = await self.index.blobs.tally()
        dirs = await asyncio.to_thread(directory_times, self.store.blobs)
        return CleanState(count, total, dirs)

    async def recover(self, *, rehash: bool = True, full: bool = True) -> RecoveryReport:
        """Start-up reconciliation of files and index after a crash or manual meddling;
        ``full=False`` (closed cleanly, nothing changed since) only clears temp files."""
        temp_removed = await asyncio.to_thread(self.store.clean_temp)
        if not full:
            return RecoveryReport(temp_removed, 0, 0, 0)
        rows = await self.index.blobs.sizes()
        files = {
            str(d): (d, p)
            for d, p in await asyncio.to_thread(lambda: list(self.store.iter_blobs()))
        }
        dropped = [Digest.parse(k) for k in rows if k not in files]
        await self.index.blobs.remove(dropped)
        adopted = removed = 0
        for key, (digest, path) in files.items():
            if key in rows:
                continue
            actual = await asyncio.to_thread(self.store.rehash, path, digest.algorithm)
            if rehash and actual == digest.hex:
                await self.index.blobs.add(digest, path.stat().st_size)
                adopted += 1
            else:
                path.unlink(missing_ok=True)
                removed += 1
        return RecoveryReport(temp_removed, len(dropped), adopted, removed)

    async def verify(self, on_blob: Callable[[int], None] = lambda size: None) -> list[Digest]:
        """Re-hash every cached blob; remove and return the corrupt ones. ``on_blob``
        gets each checked blob's size (progress)."""
        corrupt = []
        for digest, path in await asyncio.to_thread(lambda: list(self.store.iter_blobs())):
            size = path.stat().st_size
            if await asyncio.to_thread(self.store.rehash, path, digest.algorithm) != digest.hex:
                path.unlink(missing_ok=True)
                corrupt.append(digest)
            on_blob(size)
        await self.index.blobs.remove(corrupt)
        return corrupt
